"""rouge: ROUGE F1 (rouge1, rouge2, rougeL) against the best of several references."""

from __future__ import annotations

from harness.datasets import Item
from harness.scorers._registry import ScoreFn, scorer
from harness.scorers.text import references

VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@scorer("rouge", needs_reference=True)
def rouge(variant: str = "rougeL", use_stemmer: bool = True) -> ScoreFn:
    """ROUGE F1 against one or more references (best match when several). Example: `rouge: {variant: rouge2}`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not '{variant}'")
    from rouge_score import rouge_scorer

    metric = rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer)

    def score(output: str, item: Item) -> float:
        return max(metric.score(ref, output)[variant].fmeasure for ref in references(item))

    return score
