"""Whole processes, as a user runs them, against baselines measured in the same run.

Run: .venv/bin/python benchmarks/bench_e2e.py [--items 1000] [--rss-items 10000] [--repeats 3]
1. A fully cached re-run of experiments/summarize.yaml (a copy of the project, its cache filled by a first
   run) against `python -c "import litellm"`. Targets: at most 2.5 s, and at most 0.8x the import. Timed as
   a person at a terminal runs it (MLflow logging handed to the background, with the time until the run
   is in the store) and with --wait-for-logging (what CI does).
2. 1,000 items at 50 ms latency and concurrency 64, `python -m harness run` with tracking, against a bare
   `litellm.acompletion` loop, each a whole process (imports included). Targets: wall at most 1.0x, CPU
   (the process and everything it started) at most 1.2x.
3. `--rss-items N`: peak RSS of one harness run at N items (the largest single process: the calling
   process or its tracking process). Target: at most 400 MB at 10,000 items.
Medians over `--repeats` runs; the machine is noisy, so read ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_overhead import BARE, model_server, project  # noqa: E402

from harness.offline import OFFLINE_DEFAULTS  # noqa: E402


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> dict[str, float]:
    """Wall, CPU (the process and every descendant it waited for) and peak RSS of one whole process.

    The output goes to a file, as at a terminal: a pipe stays open as long as any process holding it
    (a tracking process logging in the background) and would time that process too.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{text[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024, "out": text, "started": started}  # type: ignore[dict-item]


ALONE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""
"""Runs a command and prints the peak RSS of its largest process. The benchmark's own RUSAGE_CHILDREN
keeps the largest of every process it ever waited for (the first run's local model among them), so a
figure for one run needs a parent of its own."""


def finished_parents(db: Path) -> int:
    """Parent runs (one per invocation) that MLflow logging has finished in an embedded store."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        query = (
            "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'harness.kind' and t.value = 'experiment' and r.status = 'FINISHED'"
        )
        return connection.execute(query).fetchone()[0]


def logged_after(run: dict[str, float], db: Path, before: int) -> float:
    """Seconds from the command's start until its run is in the store (logging in the background)."""
    deadline = time.perf_counter() + 300
    while finished_parents(db) <= before:
        if time.perf_counter() > deadline:
            raise SystemExit("the background logging never finished")
        time.sleep(0.05)
    return time.perf_counter() - run["started"]


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def cached_rerun(env: dict[str, str], work: Path, repeats: int) -> None:
    copy = work / "project"
    for folder in ("experiments", "evals", "prompts"):
        shutil.copytree(REPO / folder, copy / folder)
    config = "experiments/summarize.yaml"
    first = timed([sys.executable, "-m", "harness", "run", config, "--yes"], env, copy)
    print(f"first run of {config} (fills the cache): {first['wall']:.1f} s")
    db = Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    imports, waiting, background, logged = [], [], [], []
    for _ in range(repeats):
        imports.append(timed([sys.executable, "-c", "import litellm"], env))
        waiting.append(timed([sys.executable, "-m", "harness", "run", config, "--wait-for-logging"], env, copy))
        before = finished_parents(db)
        background.append(timed([sys.executable, "-m", "harness", "run", config, "--background-logging"], env, copy))
        logged.append(logged_after(background[-1], db, before))
    for run in waiting + background:
        assert "0 calls made" in str(run["out"]), "the re-run was not fully cached"
    assert "logging in the background" in str(background[-1]["out"])
    base = median(imports, "wall")
    print(f'1. python -c "import litellm": {base:.2f} s wall (median of {repeats})')
    for label, runs in (("at a terminal (logging in the background)", background), ("--wait-for-logging", waiting)):
        ours = median(runs, "wall")
        print(
            f"   cached re-run of {config}, {label}: {ours:.2f} s wall, {median(runs, 'cpu'):.2f} s CPU of what it "
            f"waited for; ratio {ours / base:.2f}x (targets: <= 2.5 s and <= 0.8x)"
        )
    after = statistics.median(logged)
    print(f"   the background logging had the run in MLflow {after:.2f} s after the command started")


def calling(env: dict[str, str], work: Path, items: int, repeats: int, rss_items: int) -> None:
    with model_server(0.05, env) as url:
        bare_script = work / "bare.py"
        bare_script.write_text(BARE.format(repo=str(REPO)))
        path = project(work / "calls", url, items, 64)
        bare = [timed([sys.executable, str(bare_script), url, str(items), "64"], env) for _ in range(repeats)]
        ours = [
            timed([sys.executable, "-m", "harness", "run", str(path), "--no-cache", "--yes"], env, path.parent.parent)
            for _ in range(repeats)
        ]
        bw, bc, hw, hc = (median(bare, "wall"), median(bare, "cpu"), median(ours, "wall"), median(ours, "cpu"))
        print(f"2. {items:,} items, 50 ms, concurrency 64, whole processes (median of {repeats}):")
        print(f"   bare litellm loop: {bw:.2f} s wall, {bc:.2f} s CPU")
        print(f"   harness run (tracked): {hw:.2f} s wall, {hc:.2f} s CPU")
        print(f"   ratios: wall {hw / bw:.2f}x (target <= 1.0x), CPU {hc / bc:.2f}x (target <= 1.2x)")
        if rss_items:
            big = project(work / "rss", url, rss_items, 64)
            one = timed(
                [sys.executable, "-c", ALONE, sys.executable, "-m", "harness", "run", str(big), "--no-cache", "--yes"],
                env,
                big.parent.parent,
            )
            one["rss_mb"] = float(str(one["out"]).strip().splitlines()[-1])
            print(
                f"3. {rss_items:,} items: peak RSS {one['rss_mb']:.0f} MB (largest single process; target <= 400 MB), "
                f"wall {one['wall']:.1f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rss-items", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cached", action="store_true", help="only figures 2 and 3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            **OFFLINE_DEFAULTS,
            "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
            "PYTHONPATH": str(REPO),
        }
        env.pop("HARNESS_CACHE", None)
        if not args.skip_cached:
            cached_rerun(env, work, args.repeats)
        calling(env, work, args.items, args.repeats, args.rss_items)


if __name__ == "__main__":
    main()
