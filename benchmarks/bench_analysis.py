"""Analysis speed: 10,000 items x 10 variants x 2,000 bootstrap resamples, target under 2 s.

Run: .venv/bin/python benchmarks/bench_analysis.py
Prints the wall time of harness's full analysis (CIs, paired tests, verdicts, frontier) and, as a
baseline measured in the same run, a per-resample loop computing the same bootstrap means.
"""

from __future__ import annotations

import time

import numpy as np

from harness.analysis import MetricInfo, analyze_records
from harness.config import AnalysisConfig, GateConfig
from harness.records import Record
from harness.summary import VariantSummary

N_ITEMS, N_VARIANTS, RESAMPLES = 10_000, 10, 2_000


def make_records(rng: np.random.Generator) -> tuple[list[Record], list[VariantSummary]]:
    difficulty = rng.beta(2, 2, size=N_ITEMS)
    records, summaries = [], []
    for v in range(N_VARIANTS):
        name = f"variant-{v}"
        scores = np.clip(difficulty - 0.01 * v + rng.normal(0, 0.1, N_ITEMS), 0, 1)
        records += [
            Record.model_construct(variant=name, item_id=str(i), error=None, scores={"q": float(s)})
            for i, s in enumerate(scores)
        ]
        summaries.append(
            VariantSummary(
                name, "m", "p", n_items=N_ITEMS, cost_per_item_usd=1e-4 * (10 - v), quality={"q": float(scores.mean())}
            )
        )
    return records, summaries


def loop_baseline(values: np.ndarray, seed: int) -> np.ndarray:
    """The straightforward way: one resample at a time."""
    rng = np.random.default_rng(seed)
    out = np.empty((RESAMPLES, values.shape[0]))
    for b in range(RESAMPLES):
        idx = rng.integers(0, values.shape[1], size=values.shape[1])
        out[b] = values[:, idx].mean(axis=1)
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    records, summaries = make_records(rng)
    metrics = [MetricInfo("q", "continuous")]
    settings = AnalysisConfig(resamples=RESAMPLES, seed=0)
    gate = GateConfig(metric="q", margin=0.02)
    analyze_records(summaries[:2], records[: 2 * N_ITEMS], metrics, "variant-0", gate, AnalysisConfig(resamples=100))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        analysis = analyze_records(summaries, records, metrics, "variant-0", gate, settings)
        times.append(time.perf_counter() - start)
    values = np.array([[r.scores["q"] for r in records[v * N_ITEMS : (v + 1) * N_ITEMS]] for v in range(N_VARIANTS)])
    start = time.perf_counter()
    loop_baseline(values, 0)
    loop_s = time.perf_counter() - start
    best = min(times)
    print(f"analysis of {N_ITEMS:,} items x {N_VARIANTS} variants x {RESAMPLES:,} resamples")
    print(
        f"  harness analyze (CIs, paired tests, verdicts, frontier): best {best:.3f} s of 3 "
        f"(runs: {', '.join(f'{t:.3f}' for t in times)}); target < 2 s: {'met' if best < 2 else 'MISSED'}"
    )
    print(f"  baseline, per-resample loop (bootstrap means only):       {loop_s:.3f} s")
    print(f"  ratio harness / loop baseline: {best / loop_s:.2f}x")
    print(f"  recommendation: {analysis.recommendation.variant if analysis.recommendation else None}")


if __name__ == "__main__":
    main()
