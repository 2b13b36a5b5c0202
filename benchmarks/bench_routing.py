"""Routing simulation at scale: a cascade on a judge score whose threshold is chosen (`min_score: auto`).

Run: .venv/bin/python benchmarks/bench_routing.py [--items 1000 4000 10000]
Choosing the threshold tries every distinct judge score, one per item. Prints, per size, the seconds of
harness's `simulate` (the threshold chosen three times: on each half and on all items, then bootstrap
CIs), and as the baseline measured in the same run the same search on all items with the cascade worked
out item by item (`tests/test_routing.py`'s definition), which is how harness did it before.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import CheckConfig, PolicyConfig
from harness.records import Record
from harness.routing import build_table, simulate
from tests.test_routing import _cascade_item_by_item

CHECK = CheckConfig(score="judge", min_score="auto", target_pgr=0.8)


def records(n: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    weak = (rng.random(n) < 0.6).astype(float)
    judge = np.clip(weak * 0.3 + rng.random(n) * 0.7, 0, 1)  # an informative, noisy judge
    out = []
    for i in range(n):
        common = {"item_id": f"i{i}", "prompt": "p", "prompt_hash": "h"}
        out.append(
            Record(
                variant="w",
                model="w",
                output="weak answer",
                cost_usd=1.0,
                eval_cost_usd=0.1,
                scores={"q": float(weak[i]), "judge": float(judge[i])},
                **common,
            )
        )
        out.append(Record(variant="s", model="s", output="strong answer", cost_usd=10.0, scores={"q": 1.0}, **common))
    return out


def item_by_item_search(rows: list[Record]) -> float:
    """The threshold search with the cascade worked out item by item: every candidate walks every item."""
    table = build_table(rows, "q", ["w", "s"])
    candidates = [-math.inf, *np.unique(table.scores["judge"]["w"]).tolist(), math.inf]
    weak, gap = table.quality["w"].mean(), table.quality["s"].mean() - table.quality["w"].mean()
    best = None
    for threshold in candidates:
        quality, cost, _ = _cascade_item_by_item(table, ["w", "s"], CHECK, threshold)
        key = (max(CHECK.target_pgr - (np.mean(quality) - weak) / gap, 0.0), float(np.mean(cost)), threshold)
        best = key if best is None or key < best else best
    return best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--baseline-up-to", type=int, default=1000, help="largest size the slow baseline runs at")
    args = parser.parse_args()
    policy = PolicyConfig(kind="cascade", check=CHECK)
    for n in args.items:
        rows = records(n)
        start = time.perf_counter()
        (result,) = simulate(rows, "q", "w", "s", [policy], resamples=2000, seed=0)
        ours = time.perf_counter() - start
        line = (
            f"{n:>6} items: simulate {ours:7.2f} s (quality {result.quality:.4f}, escalating {result.strong_share:.0%})"
        )
        if n <= args.baseline_up_to:
            start = time.perf_counter()
            item_by_item_search(rows)
            baseline = time.perf_counter() - start
            line += f"; item-by-item search on all items alone {baseline:7.2f} s; ratio {ours / baseline:.3f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
