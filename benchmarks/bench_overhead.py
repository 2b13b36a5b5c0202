"""harness end to end against a bare asyncio loop over litellm.acompletion, on the same local server.

Run: .venv/bin/python benchmarks/bench_overhead.py [--items 1000] [--rss-items 10000]
For concurrency 16 and 64 and server latency 0 and 50 ms, each side runs in a fresh process (so peak RSS
is its own) against one OpenAI-compatible server process on 127.0.0.1. Printed: wall time, CPU seconds
per request (user + system of the measuring process, plus harness's tracking process, which it starts
and joins) and peak RSS, and harness / bare ratios.
Target: harness CPU per request at most 1.3x the bare loop's. The ratio counts harness's tracking
process (MLflow import, store check, logging: a fixed cost per run); the calling process's own ratio
and the tracking process's CPU seconds are printed beside it. `--rss-items` adds one harness run at that
size for the peak-RSS target (400 MB for 10,000 items).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

SERVER = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.fake_server import FakeModelServer
server = FakeModelServer()
server.delay_s = float(sys.argv[1])
server.start()
print(server.url, flush=True)
time.sleep(10**6)
"""

BARE = """
import asyncio, json, resource, sys, time
sys.path.insert(0, {repo!r})
from harness.offline import import_litellm
litellm = import_litellm()
url, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    limit = asyncio.Semaphore(conc)
    async def one(i):
        async with limit:
            r = await litellm.acompletion(model="openai/bench", api_base=url, api_key="unused", max_retries=0,
                                          messages=[{{"role": "user", "content": f"Summarise item {{i}}."}}],
                                          max_tokens=16, temperature=0)
            return r.choices[0].message.content
    await asyncio.gather(*(one(i) for i in range(n)))

start_cpu = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
asyncio.run(main())
wall = time.perf_counter() - start
end_cpu = resource.getrusage(resource.RUSAGE_SELF)
cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
print(json.dumps({{"wall": wall, "cpu": cpu, "rss_mb": end_cpu.ru_maxrss / 1024}}))
"""

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
start_cpu = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
quiet = Console(file=io.StringIO(), width=200)
outcome = harness_run(experiment, RunOptions(use_cache=False, assume_yes=True), quiet)
wall = time.perf_counter() - start
end_cpu = resource.getrusage(resource.RUSAGE_SELF)
child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tracking process, joined by now
own = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
tracking = child.ru_utime + child.ru_stime
assert outcome.result.calls_made == len(outcome.records)
errors = sum(r.error is not None for r in outcome.records)
print(json.dumps({{"wall": wall, "cpu": own + tracking, "own_cpu": own, "tracking_cpu": tracking,
                  "rss_mb": end_cpu.ru_maxrss / 1024, "child_rss_mb": child.ru_maxrss / 1024, "errors": errors}}))
"""


@contextlib.contextmanager
def model_server(latency_s: float, env: dict[str, str]) -> Iterator[str]:
    """The test suite's fake model server in a process of its own, answering after `latency_s`; its URL."""
    server = subprocess.Popen(
        [PY, "-c", SERVER.format(repo=str(REPO)), str(latency_s)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait()


def project(root: Path, url: str, items: int, concurrency: int) -> Path:
    (root / "evals").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"i{i}", "text": f"item {i}", "reference": "summary"} for i in range(items)]
    (root / "evals/data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "prompts").mkdir(exist_ok=True)
    (root / "prompts/p.j2").write_text("{% block user %}Summarise {{ text }}.{% endblock %}")
    (root / "experiments").mkdir(exist_ok=True)
    config = (
        f"name: bench-overhead-{items}-{concurrency}\n"
        "dataset: {path: evals/data.jsonl, fields: {id: id, reference: reference}}\n"
        "prompts: [prompts/p.j2]\n"
        f"models: [{{model: openai/bench, api_base: '{url}', price: {{input_cost_per_token: 1.0e-7, "
        "output_cost_per_token: 4.0e-7}}]\n"
        "params: {max_tokens: 16, temperature: 0}\n"
        "scorers: [exact_match]\n"
        f"concurrency: {concurrency}\nmax_retries: 0\n"
    )
    path = root / "experiments/bench.yaml"
    path.write_text(config)
    return path


def measure(script: str, *args: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [PY, "-c", script.format(repo=str(REPO)), *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rss-items", type=int, default=0)
    args = parser.parse_args()
    print(
        f"{'latency':>8} {'conc':>5} | {'bare wall':>9} {'cpu/req ms':>10} {'rss MB':>7} | "
        f"{'harness wall':>12} {'cpu/req ms':>10} {'rss MB':>7} | {'cpu ratio':>9} {'wall ratio':>10} | "
        f"{'calling process only':>20} {'tracking process':>16}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(REPO)}
        for latency in (0.0, 0.05):
            with model_server(latency, env) as url:
                for concurrency in (16, 64):
                    bare = measure(BARE, url, str(args.items), str(concurrency), env=env)
                    path = project(Path(tmp) / f"p{concurrency}-{latency}", url, args.items, concurrency)
                    ours = measure(HARNESS, str(path), env=env)
                    n = args.items
                    print(
                        f"{latency * 1000:>6.0f}ms {concurrency:>5} | {bare['wall']:>8.2f}s "
                        f"{1000 * bare['cpu'] / n:>10.2f} {bare['rss_mb']:>7.0f} | {ours['wall']:>11.2f}s "
                        f"{1000 * ours['cpu'] / n:>10.2f} {ours['rss_mb']:>7.0f} | "
                        f"{ours['cpu'] / bare['cpu']:>8.2f}x {ours['wall'] / bare['wall']:>9.2f}x | "
                        f"{ours['own_cpu'] / bare['cpu']:>19.2f}x {ours['tracking_cpu']:>14.2f} s"
                    )
                if args.rss_items and latency == 0.0:
                    path = project(Path(tmp) / "rss", url, args.rss_items, 64)
                    big = measure(HARNESS, str(path), env=env)
                    print(
                        f"harness, {args.rss_items:,} items at concurrency 64: wall {big['wall']:.1f} s, "
                        f"cpu/req {1000 * big['cpu'] / args.rss_items:.2f} ms, peak RSS {big['rss_mb']:.0f} MB "
                        f"(target <= 400 MB); tracking process {big['child_rss_mb']:.0f} MB"
                    )
    started = time.perf_counter()
    subprocess.run([PY, "-m", "harness", "--help"], capture_output=True, check=True, env={**os.environ})
    print(f"python -m harness --help: {time.perf_counter() - started:.2f} s (target <= 0.5 s)")


if __name__ == "__main__":
    main()
