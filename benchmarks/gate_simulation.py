"""The gate's error rates by seeded simulation: false-fail on identical variants, power on a regression.

Run: .venv/bin/python benchmarks/gate_simulation.py [runs]
Identical variants share each item's difficulty and differ only by noise; the regression plants a loss
of twice the margin. Prints the share of runs ending pass / fail / undecided for each.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from harness.analysis import MetricInfo, analyze
from harness.config import AnalysisConfig, GateConfig
from harness.records import Record
from harness.summary import VariantSummary


def status(base: np.ndarray, cand: np.ndarray, kind: str, margin: float) -> str:
    records = [
        Record.model_construct(variant=name, item_id=str(i), error=None, scores={"q": float(v)})
        for name, values in (("base", base), ("cand", cand))
        for i, v in enumerate(values)
    ]
    summaries = [
        VariantSummary(n, "m", "p", n_items=len(base), cost_per_item_usd=c, quality={"q": 0.0})
        for n, c in (("base", 1.0), ("cand", 0.1))
    ]
    gate = GateConfig(metric="q", margin=margin, confidence=0.95)
    analysis = analyze(summaries, records, [MetricInfo("q", kind)], "base", gate, AnalysisConfig(resamples=2000))
    return analysis.verdicts["cand"].status


def draw(kind: str, latent: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Scores for one variant: item difficulty plus noise (continuous), or a pass per item (binary)."""
    if kind == "continuous":
        return np.clip(latent + shift + rng.normal(0, 0.15, latent.size), 0, 1)
    return (rng.random(latent.size) < np.clip(latent + shift, 0, 1)).astype(float)


def simulate(kind: str, n_items: int, margin: float, runs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    same, worse = Counter(), Counter()
    for _ in range(runs):
        latent = rng.beta(2, 2, size=n_items) if kind == "continuous" else rng.beta(4, 2, size=n_items)
        base = draw(kind, latent, 0.0, rng)
        same[status(base, draw(kind, latent, 0.0, rng), kind, margin)] += 1
        worse[status(base, draw(kind, latent, -2 * margin, rng), kind, margin)] += 1
    print(f"{kind}: {n_items} items, margin {margin}, confidence 0.95, {runs} seeded runs")
    print(
        f"  identical variants: false-fail {same['fail'] / runs:.3f} (alpha 0.05), "
        f"pass {same['pass'] / runs:.3f}, undecided {same['undecided'] / runs:.3f}"
    )
    print(
        f"  regression of 2x margin: caught (fail) {worse['fail'] / runs:.3f}, "
        f"pass {worse['pass'] / runs:.3f}, undecided {worse['undecided'] / runs:.3f}"
    )


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    simulate("continuous", 300, 0.05, runs, seed=1)
    simulate("binary", 1000, 0.05, runs, seed=2)
