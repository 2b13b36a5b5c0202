"""What MLflow tracking adds to a run's wall time, traces included, against the same run untracked.

Run: .venv/bin/python benchmarks/bench_tracking.py [--items 10000] [--latency 0.05] [--concurrency 64]
Each side runs as a fresh process (whole `harness.run`, as a user runs it) against one local
OpenAI-compatible server with the given latency: two variants over the items, so 2 x items calls. Sides:
tracking off (the baseline), tracking with `traces: false` (runs, metrics, records artifacts), and tracking
with a trace per record (the default). Printed: wall time, the tracking process's CPU seconds and wall
ratios against the untracked run measured in the same invocation.
Target: the default (every record a trace) at most 1.25x the untracked wall time at 10,000 items.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench_overhead import REPO, measure, model_server

HARNESS = """
import io, json, resource, sys, time
sys.path.insert(0, {repo!r})
from harness.offline import import_litellm
import_litellm()
from rich.console import Console
from harness.config import load_config
from harness.api import run as harness_run
from harness.workflow import RunOptions
experiment = load_config(sys.argv[1])
start = time.perf_counter()
quiet = Console(file=io.StringIO(), width=200)
outcome = harness_run(experiment, RunOptions(use_cache=False, assume_yes=True, tracking=sys.argv[2] == "on"), quiet)
wall = time.perf_counter() - start
child = resource.getrusage(resource.RUSAGE_CHILDREN)
assert outcome.result.calls_made == len(outcome.records), (outcome.result.calls_made, len(outcome.records))
print(json.dumps({{"wall": wall, "tracking_cpu": child.ru_utime + child.ru_stime,
                  "errors": sum(r.error is not None for r in outcome.records)}}))
"""


def project(root: Path, url: str, items: int, concurrency: int, traces: bool) -> Path:
    (root / "evals").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"i{i}", "text": f"item {i} " * 20, "reference": "summary"} for i in range(items)]
    (root / "evals/data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "prompts").mkdir(exist_ok=True)
    (root / "prompts/p.j2").write_text("{% block user %}Summarise {{ text }}.{% endblock %}")
    (root / "experiments").mkdir(exist_ok=True)
    price = "price: {input_cost_per_token: 1.0e-7, output_cost_per_token: 4.0e-7}"
    config = (
        f"name: bench-tracking-{items}-{'traces' if traces else 'runs'}\n"
        "dataset: {path: evals/data.jsonl, fields: {id: id, reference: reference}}\n"
        "prompts: [prompts/p.j2]\n"
        f"models: [{{model: openai/big, api_base: '{url}', {price}}}, {{model: openai/small, api_base: '{url}', "
        f"{price}}}]\n"
        "params: {max_tokens: 16, temperature: 0}\n"
        "scorers: [exact_match, rouge]\n"
        f"concurrency: {concurrency}\nmax_retries: 0\ntraces: {str(traces).lower()}\n"
    )
    path = root / "experiments/bench.yaml"
    path.write_text(config)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(REPO)}
        with model_server(args.latency, env) as url:
            results = {}
            sides = [("tracking off", "off", True), ("runs, no traces", "on", False), ("traces (default)", "on", True)]
            for label, tracking, traces in sides:
                path = project(Path(tmp) / label.split()[0], url, args.items, args.concurrency, traces)
                results[label] = measure(HARNESS, str(path), tracking, env=env)
    base = results["tracking off"]["wall"]
    calls = 2 * args.items
    print(
        f"{args.items:,} items x 2 variants ({calls:,} calls), {args.latency * 1000:.0f} ms latency, "
        f"concurrency {args.concurrency}"
    )
    print(f"{'side':<18} {'wall':>8} {'vs off':>7} {'tracking cpu':>13} {'errors':>6}")
    for label, result in results.items():
        print(
            f"{label:<18} {result['wall']:>7.1f}s {result['wall'] / base:>6.2f}x "
            f"{result['tracking_cpu']:>12.1f}s {result['errors']:>6}"
        )
    print(f"target: traces (default) <= 1.25x tracking off; measured {results['traces (default)']['wall'] / base:.2f}x")


if __name__ == "__main__":
    main()
