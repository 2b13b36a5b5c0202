"""A team's runs on one cache: calls paid twice by concurrent runs, and N shards against one run.

Run: .venv/bin/python benchmarks/bench_team.py [--items 300] [--latency 0.2] [--shards 4]
One OpenAI-compatible test server (in this process, counting every request it answers) and real
`python -m harness` processes:
1. two runs of one experiment started at once on one SQLite cache, then on one Redis cache: requests the
   server answered more than once (a provider would have billed them twice);
2. one run alone (its own cache) against N shard processes started at once on one Redis cache, then the
   assembling run: wall times, and the ratio shards / one run.
Needs redis-server (the Debian package) for the Redis rows.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import base_config, fake_model, write_project  # noqa: E402
from tests.fake_server import FakeModelServer  # noqa: E402
from tests.servers import start_redis  # noqa: E402

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


def paid_twice(server: FakeModelServer) -> int:
    counts = collections.Counter(json.dumps(r, sort_keys=True) for r in server.requests)
    return sum(n - 1 for n in counts.values())


def launch(config: Path, cache: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(config), "--no-tracking", "--yes", *extra],
        cwd=config.parent.parent,
        env={**os.environ, "PYTHONPATH": str(REPO), "HARNESS_CACHE": cache},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait(processes: list[subprocess.Popen[str]]) -> float:
    started = time.perf_counter()
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a harness run failed:\n{out[-3000:]}")
    return time.perf_counter() - started


def project(root: Path, server: FakeModelServer, items: int) -> Path:
    rows = [
        {"id": f"i{k:05d}", "document": f"Item {k} of the benchmark.", "reference": f"item {k}"} for k in range(items)
    ]
    config = base_config([fake_model(server, "bench", price=PRICE)], concurrency=4, name="team-bench")
    return write_project(root, config, items=rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request at the server")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    server = FakeModelServer().start()
    server.delay_s = args.latency
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    redis = start_redis(work / "redis")
    redis_url = next(redis)
    config = project(work / "project", server, args.items)
    print(f"{args.items} items x 1 variant, {args.latency * 1000:.0f} ms per request, concurrency 4 per process")

    for name, cache in (("sqlite", str(work / "pair.sqlite")), ("redis", redis_url.rsplit("/", 1)[0] + "/1")):
        server.requests.clear()
        wait([launch(config, cache), launch(config, cache)])
        print(
            f"two concurrent runs on one {name} cache: {len(server.requests)} requests answered, "
            f"{paid_twice(server)} paid twice"
        )

    server.requests.clear()
    alone = wait([launch(config, str(work / "alone.sqlite"))])
    alone_requests = len(server.requests)
    server.requests.clear()
    shards = wait([launch(config, redis_url, "--shard", f"{k}/{args.shards}") for k in range(1, args.shards + 1)])
    shard_requests, shard_twice = len(server.requests), paid_twice(server)
    assemble = wait([launch(config, redis_url)])
    print(f"one run alone: {alone:.1f} s wall, {alone_requests} requests")
    print(
        f"{args.shards} shards at once: {shards:.1f} s wall, {shard_requests} requests, {shard_twice} paid twice; "
        f"assembling run: {assemble:.1f} s, {len(server.requests) - shard_requests} requests"
    )
    total = (shards + assemble) / alone
    print(f"ratio shards / one run: {shards / alone:.2f}x; shards + assembling / one run: {total:.2f}x")
    redis.close()
    server.stop()


if __name__ == "__main__":
    main()
