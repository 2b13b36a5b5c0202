"""One call's CPU in harness's call path (`call_model`), with and without litellm being handed the rates.

Run: .venv/bin/python benchmarks/bench_call_path.py [--calls 1000] [--rounds 3]
A model litellm's price map lacks, priced in the config, against a local server at 50 ms, concurrency 64.
Rounds alternate the two ways in one process (after a warm-up), so the ratio compares like with like;
printed: CPU seconds per round and the median ratio with / without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_overhead import model_server  # noqa: E402

from harness.offline import OFFLINE_DEFAULTS, import_litellm  # noqa: E402


async def calls(url: str, n: int, prices: dict[str, float] | None) -> None:
    from harness.config import ModelConfig
    from harness.providers.call import call_model

    cfg = ModelConfig(model="openai/bench", api_base=url)
    limit = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with limit:
            messages = [{"role": "user", "content": f"Summarise item {i}."}]
            result = await call_model(cfg, messages, {"max_tokens": 16, "temperature": 0}, 10, 0, prices)
            assert result.error is None, result.error

    await asyncio.gather(*(one(i) for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, **OFFLINE_DEFAULTS, "PYTHONPATH": str(REPO)}
    os.environ.update(OFFLINE_DEFAULTS)
    with model_server(0.05, env) as url:
        import_litellm()
        rates = {"input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7}
        asyncio.run(calls(url, 100, None))  # warm-up: connections, litellm's lazy imports
        cpu: dict[str, list[float]] = {"without the rates": [], "with the rates": []}
        for _ in range(args.rounds):
            for label, prices in (("without the rates", None), ("with the rates", rates)):
                start = time.process_time()
                asyncio.run(calls(url, args.calls, prices))
                cpu[label].append(time.process_time() - start)
        for label, seconds in cpu.items():
            print(f"{label}: {' '.join(f'{s:.2f}' for s in seconds)} s CPU per {args.calls:,} calls")
        ratio = statistics.median(cpu["with the rates"]) / statistics.median(cpu["without the rates"])
        print(f"median ratio with / without: {ratio:.2f}x")


if __name__ == "__main__":
    main()
