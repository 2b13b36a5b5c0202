"""rouge: ROUGE F1 (rouge1, rouge2, rougeL) against the best of several references."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from harness.datasets import Item
from harness.scorers._registry import ScoreFn, scorer
from harness.scorers.text import references

VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@scorer("rouge", needs_reference=True)
def rouge(variant: str = "rougeL", use_stemmer: bool = True) -> ScoreFn:
    """ROUGE F1 against one or more references (best match when several). Example: `rouge: {variant: rouge2}`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not '{variant}'")
    metric = import_rouge_scorer().RougeScorer([variant], use_stemmer=use_stemmer)
    stemmer = getattr(getattr(metric, "_tokenizer", None), "_stemmer", None)
    if stemmer is not None:
        # Porter stemming is a pure function of the word and most of ROUGE's time; each word once (2.5-3.5x).
        stemmer.stem = functools.lru_cache(maxsize=200_000)(stemmer.stem)

    def score(output: str, item: Item) -> float:
        return max(metric.score(ref, output)[variant].fmeasure for ref in references(item))

    return score


def import_rouge_scorer() -> Any:
    """`rouge_score.rouge_scorer`, without running nltk's package `__init__` (it imports its
    corpora, classifiers and scikit-learn, while rouge-score uses nltk's Porter stemmer alone).

    `nltk` and `nltk.stem` stand in as bare namespaces while `nltk.stem.porter` loads (the same file as
    always, so scores are unchanged: tests/test_scorers.py compares both imports), and are removed after,
    so a later `import nltk` anywhere gets the whole package.
    """
    if "rouge_score.rouge_scorer" in sys.modules or "nltk" in sys.modules:
        from rouge_score import rouge_scorer

        return rouge_scorer
    spec = importlib.util.find_spec("nltk")
    stand_ins = []
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        for name, folder in (("nltk", root), ("nltk.stem", root / "stem")):
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
            stand_ins.append((name, module))
    try:
        from rouge_score import rouge_scorer
    finally:
        for name, module in stand_ins:
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return rouge_scorer
