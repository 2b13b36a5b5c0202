"""The gate's error rates by seeded simulation: false-fail on identical variants, power on a regression,
the sequential design against the fixed one, and the family-wise error over five candidates. The false
pass at a true loss equal to the margin, on every path and score shape, is benchmarks/calibration.py's.

Run: .venv/bin/python benchmarks/gate_simulation.py [runs]
Identical variants share each item's difficulty and differ only by noise; the regression plants a loss
of twice the margin. Prints the share of runs ending pass / fail / undecided for each, and for the
sequential gate (the decision engine's looks, as the gate runs them, 5 looks) the mean share of the fixed
design's items it used.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from harness.analysis import MetricInfo, analyze_records
from harness.config import AnalysisConfig, GateConfig
from harness.decision import SequentialDesign, decide
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
    analysis = analyze_records(
        summaries, records, [MetricInfo("q", kind)], "base", gate, AnalysisConfig(resamples=2000)
    )
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


def sequential(base: np.ndarray, cand: np.ndarray, kind: str, margin: float, spending: str) -> tuple[str, float]:
    """The sequential gate on one run (the decision engine, 5 looks): its status and the share of items used."""
    design = SequentialDesign(5, spending)  # type: ignore[arg-type]
    decision = decide(base, {"cand": cand}, kind=kind, margin=margin, sequential=design).candidates["cand"]  # type: ignore[arg-type]
    return {"futile": "undecided"}.get(decision.status, decision.status), decision.items_used / base.size


def simulate_sequential(kind: str, n_items: int, margin: float, runs: int, seed: int, spending: str) -> None:
    rng = np.random.default_rng(seed)
    outcomes: dict[str, list[tuple[str, float]]] = {"0": [], "2x": []}
    for _ in range(runs):
        latent = rng.beta(2, 2, size=n_items) if kind == "continuous" else rng.beta(4, 2, size=n_items)
        base = draw(kind, latent, 0.0, rng)
        outcomes["0"].append(sequential(base, draw(kind, latent, 0.0, rng), kind, margin, spending))
        outcomes["2x"].append(sequential(base, draw(kind, latent, -2 * margin, rng), kind, margin, spending))
    print(f"sequential, {spending}: {kind}, {n_items} items, margin {margin}, 5 looks, {runs} seeded runs")
    for label, truth in (("0", "identical variants"), ("2x", "regression of 2x margin")):
        statuses = Counter(status for status, _ in outcomes[label])
        share = float(np.mean([used for _, used in outcomes[label]]))
        print(
            f"  {truth}: fail {statuses['fail'] / runs:.3f}, pass {statuses['pass'] / runs:.3f}, "
            f"undecided {statuses['undecided'] / runs:.3f}; mean share of the fixed design's items {share:.3f}"
        )


def simulate_family(n_items: int, margin: float, runs: int, seed: int) -> None:
    """Five candidates identical to the baseline: how often does any of them fail (Holm, the default)?"""
    rng = np.random.default_rng(seed)
    any_fail = 0
    for _ in range(runs):
        latent = rng.beta(2, 2, size=n_items)
        columns = {name: draw("continuous", latent, 0.0, rng) for name in ("base", "c1", "c2", "c3", "c4", "c5")}
        records = [
            Record.model_construct(variant=name, item_id=str(i), error=None, scores={"q": float(v)})
            for name, values in columns.items()
            for i, v in enumerate(values)
        ]
        summaries = [
            VariantSummary(name, "m", "p", n_items=n_items, cost_per_item_usd=1.0, quality={"q": 0.0})
            for name in columns
        ]
        gate = GateConfig(metric="q", margin=margin, confidence=0.95)
        settings = AnalysisConfig(resamples=1000)
        analysis = analyze_records(summaries, records, [MetricInfo("q", "continuous")], "base", gate, settings)
        any_fail += any(v.status == "fail" for v in analysis.verdicts.values())
    print(f"five candidates identical to the baseline (Holm), {n_items} items, {runs} seeded runs:")
    print(f"  any of them fails: {any_fail / runs:.3f} (alpha 0.05)")


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    simulate("continuous", 300, 0.05, runs, seed=1)
    simulate("binary", 1000, 0.05, runs, seed=2)
    simulate("binary", 2000, 0.05, runs, seed=3)
    for spending in ("pocock", "obrien-fleming"):
        simulate_sequential("continuous", 300, 0.05, 5 * runs, 1, spending)
        simulate_sequential("binary", 1000, 0.05, 5 * runs, 2, spending)
        simulate_sequential("binary", 2000, 0.05, 5 * runs, 3, spending)
    simulate_family(200, 0.05, runs // 2, seed=4)
