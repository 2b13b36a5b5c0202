"""How much of a budget cap a run uses, counted on the test server: concurrency 32, 20% faults.

A cap that stops a run at half its value wastes the eval; one that is passed costs money. This runs 400
items against the local OpenAI-compatible test server with 20% injected faults (429 with and without
Retry-After, 500, 503, resets), at concurrency 32 and 4, under a cap, and prints what the server
answered with 200 (what a provider would bill) as a share of the cap.

    .venv/bin/python benchmarks/budget_use.py
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.offline import OFFLINE_DEFAULTS

for key, value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(key, value)

from rich.console import Console  # noqa: E402

from harness.api import run as harness_run  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.workflow import RunOptions  # noqa: E402
from tests.conftest import base_config, fake_model, write_project  # noqa: E402
from tests.fake_server import FakeModelServer, Usage  # noqa: E402

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
FAULTS = ["429_retry_after", "429", "500", "503", "reset", "429_retry_after_soon"]


def one(concurrency: int, cap: float, seed: int) -> tuple[float, float]:
    server = FakeModelServer().start()
    try:
        server.usage = Usage(prompt_tokens=40, completion_tokens=16)
        server.inject_faults(0.2, FAULTS, seed=seed)
        items = [{"id": f"i{n}", "document": f"Document {n}. It says {n}.", "reference": "x"} for n in range(400)]
        with tempfile.TemporaryDirectory() as tmp:
            config = base_config(
                [fake_model(server, price=PRICE)],
                concurrency=concurrency,
                max_retries=4,
                budget={"max_usd": cap},
                cache={"enabled": False},
            )
            path = write_project(Path(tmp), config, items=items)
            outcome = harness_run(load_config(path), RunOptions(tracking=False), Console(file=io.StringIO()))
        billed = sum(server.billable.values()) * (40 * 1e-6 + 16 * 2e-6)
        return billed, outcome.status.spent_usd
    finally:
        server.stop()


def main() -> None:
    cap = 0.01
    print(f"cap ${cap}; one call bills $0.000072 (worst case about $0.000086); 400 items, 20% faults")
    for concurrency in (32, 4):
        for seed in (1, 2, 3):
            billed, spent = one(concurrency, cap, seed)
            print(
                f"concurrency {concurrency:>2}, seed {seed}: billed by the server ${billed:.6f} = {billed / cap:.1%} "
                f"of the cap; harness counted ${spent:.6f}; over the cap: {billed > cap}"
            )


if __name__ == "__main__":
    main()
