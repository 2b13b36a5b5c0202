"""A million-line production log sampled in bounded memory, against parsing the same lines and keeping them.

Writes N OpenAI-format lines (three features, a week of timestamps) to a temporary file, then in fresh
processes measures: (a) `harness.logs.read_log` sampling 200 calls stratified by feature, and (b) the
baseline a hand-written loader does: `json.loads` every line and keep the rows in a list (run on a tenth
of the lines and scaled, since keeping a million rows is what the sampler avoids). Prints each one's peak
RSS and lines per second, and the ratios.

    .venv/bin/python benchmarks/bench_logs.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLER = """
import resource, sys, time
from pathlib import Path
from harness.config import LogsConfig
from harness.logs import read_log
path = Path(sys.argv[1])
start = time.perf_counter()
sampled = read_log(LogsConfig(path=str(path), segment_by="feature", sample=200), path, "bench", None)
took = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(sampled.lines, took, peak, len(sampled.calls), sorted(sampled.segments.items()))
"""

BASELINE = """
import json, resource, sys, time
from itertools import islice
path, limit = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
with open(path, "rb") as handle:
    rows = [json.loads(line) for line in islice(handle, limit)]
took = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(len(rows), took, peak)
"""

IDLE = """
import resource
import harness.logs
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


VERBS = ["reset", "export", "share"]


def write_log(path: Path, lines: int) -> None:
    rng = random.Random(0)
    start = 1_793_491_200
    features = ["search", "summarize", "support"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            feature = features[0] if i % 10 < 6 else features[1] if i % 10 < 9 else features[2]
            line = {
                "request": {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "You answer questions about our product."},
                        {"role": "user", "content": f"question {i}: how do I {rng.choice(VERBS)}?"},
                    ],
                },
                "response": {
                    "id": f"chatcmpl-{i}",
                    "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}],
                    "usage": {"prompt_tokens": 40 + i % 50, "completion_tokens": 10 + i % 20},
                },
                "timestamp": start + i * 604800 / lines,
                "metadata": {"feature": feature},
            }
            out.write(json.dumps(line) + "\n")


def run(code: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.split(maxsplit=4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    lines = parser.parse_args().lines
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        began = time.perf_counter()
        write_log(path, lines)
        size = path.stat().st_size / 1e6
        print(f"log: {lines:,} lines, {size:,.0f} MB, written in {time.perf_counter() - began:.0f} s")
        idle = float(run(IDLE)[0])
        read, took, peak, kept, segments = run(SAMPLER, str(path))
        tenth = max(1, lines // 10)
        base_rows, base_took, base_peak = run(BASELINE, str(path), str(tenth))
    rate, base_rate = int(read) / float(took), int(base_rows) / float(base_took)
    base_scaled = idle + (float(base_peak) - idle) * lines / int(base_rows)
    print(f"interpreter with harness.logs imported: peak RSS {idle:.0f} MB")
    print(f"sampler: {int(read):,} lines -> {kept} calls {segments}; {rate:,.0f} lines/s")
    print(f"sampler: peak RSS {float(peak):.0f} MB")
    print(
        f"baseline (json.loads and keep): {int(base_rows):,} lines at {base_rate:,.0f} lines/s, peak RSS "
        f"{float(base_peak):.0f} MB; scaled to {lines:,} lines about {base_scaled:,.0f} MB"
    )
    print(f"ratios: sampler speed {rate / base_rate:.2f}x the baseline's; memory {float(peak) / base_scaled:.3f}x")
    print(f"bound: peak RSS {float(peak):.0f} MB {'<=' if float(peak) <= 500 else '>'} 500 MB")


if __name__ == "__main__":
    main()
