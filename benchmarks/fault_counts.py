"""Counts behind the fault-injection test: 500 items at a 20% provider fault rate.

Run: .venv/bin/python benchmarks/fault_counts.py
Prints the faults injected by kind, items lost, recorded errors by type, completions billed twice and
retries, for the same scenario tests/test_reliability.py asserts on.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.offline import apply_offline_defaults

apply_offline_defaults()

from rich.console import Console  # noqa: E402

from harness.api import run as harness_run  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.workflow import RunOptions  # noqa: E402
from tests.conftest import base_config, fake_model, write_project  # noqa: E402
from tests.fake_server import FAULT_KINDS, FakeModelServer  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    server = FakeModelServer().start()
    server.inject_faults(0.2, list(FAULT_KINDS), seed=7)
    items = [{"id": f"i{n}", "document": f"Item {n} says {n}.", "reference": f"item {n}"} for n in range(500)]
    price = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    config = base_config([fake_model(server, price=price)], concurrency=32, timeout_s=0.8, max_retries=5)
    outcome = harness_run(
        load_config(write_project(tmp, config, items=items)),
        RunOptions(use_cache=False),
        Console(file=io.StringIO(), width=250),
    )
    server.stop()
    records = outcome.records
    errors: dict[str, int] = {}
    for r in records:
        if r.error is not None:
            errors[r.error.type] = errors.get(r.error.type, 0) + 1
    print(
        f"requests {len(server.requests)}, faults injected {sum(server.faults_injected.values())}: "
        f"{dict(sorted(server.faults_injected.items()))}"
    )
    print(
        f"records {len(records)}, items lost {500 - len({r.item_id for r in records})}, "
        f"successes {sum(r.error is None for r in records)}, recorded errors {errors}"
    )
    print(
        f"completions billed twice {sum(v > 1 for v in server.billable.values())}, "
        f"retries {sum(r.attempts - 1 for r in records)}, max attempts {max(r.attempts for r in records)}"
    )


if __name__ == "__main__":
    main()
