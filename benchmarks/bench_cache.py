"""Re-running a finished 1,000-item x 4-variant experiment from the cache, and `estimate` on it.

Run: .venv/bin/python benchmarks/bench_cache.py
Targets: the cached re-run (everything `run` does: checks, cache lookups, scoring, analysis, MLflow
logging) in at most 3 s; `estimate` in at most 2 s. Interpreter start and imports are excluded; the
first, uncached run against a local OpenAI-compatible server is measured in the same process as the
baseline the ratios are printed against.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.offline import apply_offline_defaults

apply_offline_defaults()

from rich.console import Console  # noqa: E402

from harness.api import run as harness_run  # noqa: E402
from harness.caches import open_cache  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.planner import prepare  # noqa: E402
from harness.spending import estimates_for  # noqa: E402
from tests.fake_server import FakeModelServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N_ITEMS = 1000


def make_project(root: Path, server: FakeModelServer) -> Path:
    rows = [json.loads(line) for line in (REPO / "evals/gsm8k/test.jsonl").read_text().splitlines()[:N_ITEMS]]
    (root / "evals").mkdir()
    (root / "evals/data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "prompts").mkdir()
    (root / "prompts/short.j2").write_text("{% block user %}{{ question }}{% endblock %}")
    (root / "prompts/long.j2").write_text(
        "{% block system %}Solve step by step; end with '#### <number>'.{% endblock %}"
        "{% block user %}{{ question }}{% endblock %}"
    )
    (root / "experiments").mkdir()
    price = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}
    config = {
        "name": "bench-cache",
        "dataset": {"path": "evals/data.jsonl", "fields": {"id": "id", "reference": "final_answer"}},
        "prompts": ["prompts/short.j2", "prompts/long.j2"],
        "models": [
            {"model": "openai/bench-a", "api_base": server.url, "price": price},
            {"model": "openai/bench-b", "api_base": server.url, "price": price},
        ],
        "params": {"temperature": 0, "max_tokens": 32},
        "scorers": ["numeric_match"],
        "baseline": {"model": "openai/bench-a", "prompt": "long"},
        "concurrency": 64,
        "budget": {"confirm_above_usd": 100},
    }
    path = root / "experiments/bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    print(f"  {label:<58} {seconds:7.3f} s")
    return value, seconds


def main() -> None:
    server = FakeModelServer().start()
    server.answer = lambda request: "The answer is 42.\n#### 42"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        path = make_project(root, server)
        experiment = load_config(path)
        quiet = Console(file=io.StringIO(), width=200)
        print(f"{N_ITEMS} items x 4 variants against a local server (concurrency 64)")
        _, cold = timed("first run (4,000 calls, baseline)", lambda: harness_run(experiment, console=quiet))
        calls = len(server.requests)
        cached = []
        for attempt in range(3):
            outcome, seconds = timed(
                f"re-run from cache #{attempt + 1}", lambda: harness_run(experiment, console=quiet)
            )
            cached.append(seconds)
            assert outcome.result.calls_made == 0 and len(server.requests) == calls
        estimate = []
        for attempt in range(3):

            def run_estimate() -> None:
                plan = prepare(load_config(path))
                estimates_for(plan, open_cache(experiment), tracking=True)

            _, seconds = timed(f"estimate #{attempt + 1}", run_estimate)
            estimate.append(seconds)
    server.stop()
    best_cached, best_estimate = min(cached), min(estimate)
    print(
        f"cached re-run: best {best_cached:.3f} s (target <= 3 s: {'met' if best_cached <= 3 else 'MISSED'}), "
        f"{best_cached / cold:.2f}x the first run; 0 calls made"
    )
    print(
        f"estimate:      best {best_estimate:.3f} s (target <= 2 s: {'met' if best_estimate <= 2 else 'MISSED'}), "
        f"{best_estimate / cold:.2f}x the first run"
    )


if __name__ == "__main__":
    main()
