"""How often `harness shorten` claims a shorter prompt that is not as good, against the same search judged
on the items it searched on (the winner's curse it avoids).

Run: .venv/bin/python benchmarks/shorten_alpha.py [searches]
The model's answers do not depend on the prompt: each (prompt, item) is a fresh coin at p = 0.6, so at
margin 0 the true difference of any shortened prompt is exactly 0 and every claim of non-inferiority is
false. Each search has 8 sentences to try on 20 of 40 items. Prints, per score kind, the share of searches
whose reported verdict is a pass, with a 95% Clopper-Pearson interval, for the held-out confirmation
(what harness reports) and for a confirmation on the search items (the baseline), and their ratio.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from scipy.stats import binomtest

from harness.shorten import Evaluate, search, split_items

SIZES = [16, 14, 12, 10, 8, 6, 4, 2]
IDS = [f"i{n}" for n in range(40)]


def coin_flips(seed: int, p: float = 0.6) -> Evaluate:
    def evaluate(removed: frozenset[int], ids: list[str]) -> np.ndarray:
        draws = [hashlib.sha256(f"{seed}|{sorted(removed)}|{i}".encode()).digest()[0] / 256 for i in ids]
        return np.array([1.0 if d < p else 0.0 for d in draws])

    return evaluate


def claims(searches: int, kind: str, held_out: bool) -> int:
    out = 0
    for seed in range(searches):
        searched, confirmed = split_items(IDS, seed)
        found = search(SIZES, coin_flips(seed), searched, confirmed if held_out else searched, 0.0, 0.95, kind)
        out += found.confirmation is not None and found.confirmation.status == "pass"
    return out


def main() -> None:
    searches = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(f"{searches} searches per row, alpha 0.05, margin 0, answers independent of the prompt")
    for kind in ("binary", "continuous"):
        rates = {}
        for label, held_out in (("held-out confirmation", True), ("search items reused", False)):
            k = claims(searches, kind, held_out)
            ci = binomtest(k, searches).proportion_ci(0.95)
            rates[label] = k / searches
            print(f"{kind:>10}  {label:<22} false claims {k / searches:.4f} [{ci.low:.4f}, {ci.high:.4f}]")
        ratio = rates["search items reused"] / max(rates["held-out confirmation"], 1 / searches)
        print(f"{kind:>10}  reused / held-out: {ratio:.1f}x")


if __name__ == "__main__":
    main()
