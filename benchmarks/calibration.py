"""The decision engine's error rates by seeded simulation, on every path and for the score shapes users have.

Run: .venv/bin/python benchmarks/calibration.py [runs] [--quick] [--sizes=20,40] [--shapes="mostly zeros,1-5 grades"]

Rows are score shapes x eval sizes; columns are paths (fixed, sequential with Pocock and O'Brien-Fleming
spending, Holm over 2 and 5 candidates, epochs). Each cell gives, over `runs` seeded runs (default 2,000;
sequential cells 4x that):

- **false pass** at a true loss equal to the margin: the error that lets a worse model through; nominal
  5% (for Holm: any of the candidates passes, every one of them at the margin);
- **identical pass**: power when the candidate is as good as the baseline;
- **2x caught**: a loss of twice the margin ending in "fail";
- **used**: the sequential design's mean share of the items.

The truth is exact by construction: each candidate answers an item as the baseline's model would (an
independent draw from the item's own distribution) except that with probability q it fails it outright
(the lowest score); so its mean loss is q times the mean distance to the lowest score, and q is set to
make that the margin (or twice it). Monte Carlo error at 5% over 2,000 runs is about 0.5 points (one
standard error); the bound printed beside it is 5% + 2 standard errors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.decision import SequentialDesign, decide


@dataclass(frozen=True)
class Shape:
    """A score shape: per-item latent parameters, a draw given them, the lowest score and its mean."""

    name: str
    kind: str
    margin: float
    latent: Callable[[np.random.Generator, int], np.ndarray]
    draw: Callable[[np.random.Generator, np.ndarray, int], np.ndarray]
    floor: float
    mean: float
    """The expected score (over items and draws): a candidate failing with probability q loses
    q * (mean - floor)."""


def _beta_draw(rng: np.random.Generator, mu: np.ndarray, samples: int, kappa: float = 10.0) -> np.ndarray:
    mu = np.clip(mu, 1e-3, 1 - 1e-3)
    return rng.beta(mu[:, None] * kappa, (1 - mu[:, None]) * kappa, size=(mu.size, samples))


SHAPES = [
    Shape(
        "pass/fail",
        "binary",
        0.05,
        lambda rng, n: rng.beta(4, 2, size=n),
        lambda rng, mu, s: (rng.random((mu.size, s)) < mu[:, None]).astype(float),
        0.0,
        4 / 6,
    ),
    Shape(
        "bounded continuous",
        "bounded",
        0.05,
        lambda rng, n: rng.beta(2, 2, size=n),
        _beta_draw,
        0.0,
        0.5,
    ),
    Shape(
        "mostly zeros",
        "bounded",
        0.02,
        lambda rng, n: rng.beta(2, 5, size=n) * (rng.random(n) < 0.4),
        lambda rng, mu, s: np.where(mu[:, None] > 0, _beta_draw(rng, np.maximum(mu, 1e-3), s), 0.0),
        0.0,
        0.4 * 2 / 7,
    ),
    Shape(
        "1-5 grades",
        "ordinal",
        0.2,
        lambda rng, n: rng.beta(3, 2, size=n),
        lambda rng, mu, s: 1.0 + rng.binomial(4, np.repeat(mu[:, None], s, axis=1)),
        1.0,
        1.0 + 4 * 3 / 5,
    ),
]


def pair(shape: Shape, rng: np.random.Generator, n: int, loss: float, k: int = 1, samples: int = 1):
    """Baseline scores and k candidates' (items x samples), each candidate losing `loss` in expectation."""
    mu = shape.latent(rng, n)
    base = shape.draw(rng, mu, samples)
    q = loss / (shape.mean - shape.floor)
    candidates = {}
    for j in range(k):
        draws = shape.draw(rng, mu, samples)
        failed = rng.random(draws.shape) < q
        candidates[f"c{j}"] = np.where(failed, shape.floor, draws)
    if samples == 1:
        return base[:, 0], {name: c[:, 0] for name, c in candidates.items()}
    return base, candidates


def rates(shape: Shape, n: int, runs: int, seed: int, path: str) -> dict[str, float]:
    """Shares of runs: false pass at the margin, identical passing, a 2x loss caught; items used."""
    rng = np.random.default_rng(seed)
    k = {"holm2": 2, "holm5": 5}.get(path, 1)
    samples = 3 if path == "epochs" else 1
    design = {"pocock": SequentialDesign(5, "pocock"), "obf": SequentialDesign(5, "obrien-fleming")}.get(path)
    counts = {"false_pass": 0, "identical_pass": 0, "caught": 0}
    used = []
    for _ in range(runs):
        for key, loss in (("false_pass", shape.margin), ("identical_pass", 0.0), ("caught", 2 * shape.margin)):
            if key != "false_pass" and k > 1:
                continue
            base, cands = pair(shape, rng, n, loss, k, samples)
            result = decide(base, cands, kind=shape.kind, margin=shape.margin, sequential=design)  # type: ignore[arg-type]
            statuses = [d.status for d in result.candidates.values()]
            if key == "caught":
                counts[key] += statuses[0] == "fail"
            else:
                counts[key] += "pass" in statuses
            if design is not None and key == "identical_pass":
                used.append(next(iter(result.candidates.values())).items_used / n)
    out = {key: value / runs for key, value in counts.items()}
    out["used"] = float(np.mean(used)) if used else math.nan
    return out


PATHS = ["fixed", "pocock", "obf", "holm2", "holm5", "epochs"]
SIZES = [20, 40, 100, 300, 1000]


def main(runs: int, sizes: list[int], paths: list[str], shapes: list[Shape] | None = None) -> None:
    bound = 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)
    print(f"false pass at a true loss equal to the margin (nominal 0.05; 2 s.e. bound at {runs} runs: {bound:.3f})")
    print("cells: false pass / identical pass / 2x margin caught [/ share of items used]")
    header = f"{'shape':<20} {'n':>5} " + " ".join(f"{p:>24}" for p in paths)
    print(header)
    worst = 0.0
    for s_index, shape in enumerate(SHAPES):
        if shapes is not None and shape not in shapes:
            continue
        for n in sizes:
            cells = []
            for p_index, path in enumerate(paths):
                scale = 4 if path in ("pocock", "obf") else 1
                r = rates(shape, n, runs * scale, 1000 * s_index + 10 * p_index + n, path)
                worst = max(worst, r["false_pass"])
                cell = f"{r['false_pass']:.3f}"
                if path not in ("holm2", "holm5"):
                    cell += f"/{r['identical_pass']:.2f}/{r['caught']:.2f}"
                if math.isfinite(r["used"]):
                    cell += f"/{r['used']:.2f}"
                cells.append(f"{cell:>24}")
            print(f"{shape.name:<20} {n:>5} " + " ".join(cells), flush=True)
    print(f"worst false pass: {worst:.3f} (bound {bound:.3f})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    options = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    quick = "--quick" in sys.argv
    sizes = [int(n) for n in options["sizes"].split(",")] if "sizes" in options else None
    chosen = [s for s in SHAPES if s.name in options["shapes"].split(",")] if "shapes" in options else None
    main(int(args[0]) if args else 2000, sizes or ([20, 40, 100] if quick else SIZES), PATHS, chosen)
