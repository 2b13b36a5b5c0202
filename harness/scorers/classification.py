"""accuracy: the predicted label against the reference label, with macro-F1 over the variant."""

from __future__ import annotations

from harness.datasets import Item
from harness.records import NOT_A_LABEL
from harness.scorers._registry import ScorerParts, scorer
from harness.scorers.text import normalizer, references


@scorer("accuracy", kind="binary", needs_reference=True)
def accuracy(
    case_sensitive: bool = False, strip_punctuation: bool = True, labels: list[str] | None = None
) -> ScorerParts:
    """1 when the output is the reference label (normalised); the aggregate adds macro-F1 and the share of
    outputs that are no label at all.

    Macro-F1 averages per-label F1 over the labels that occur in the references, so a model that
    predicts only the majority label scores low even when accuracy looks fine. Outputs outside the
    label set count as wrong for their true label, and `not_a_label` says how many there were: a prompt
    whose answers are sentences, not labels, is a broken prompt, not a weak model. The label set is
    `labels` when given, else every reference label of the eval. Example: `accuracy: {labels: [yes, no]}`.
    """
    normalize = normalizer(case_sensitive, strip_punctuation)
    given = {normalize(label) for label in labels or []}

    def predicted(output: str) -> str:
        return normalize(output.strip().strip("`'\""))

    def score(output: str, item: Item) -> float:
        return float(predicted(output) in {normalize(r) for r in references(item)})

    def aggregate(outputs: list[str], items: list[Item]) -> dict[str, float]:
        truth = [normalize(references(i)[0]) for i in items]
        guess = [predicted(o) for o in outputs]
        known = given or {normalize(r) for i in items for r in references(i)}
        outside = sum(g not in known for g in guess) / len(guess) if guess else float("nan")
        return {"macro_f1": macro_f1(truth, guess), NOT_A_LABEL: outside}

    return ScorerParts(score, aggregate)


def macro_f1(truth: list[str], guess: list[str]) -> float:
    """Unweighted mean of per-label F1 over the labels present in `truth`."""
    labels = sorted(set(truth))
    if not labels:
        return float("nan")
    total = 0.0
    for label in labels:
        tp = sum(t == label and g == label for t, g in zip(truth, guess, strict=True))
        fp = sum(t != label and g == label for t, g in zip(truth, guess, strict=True))
        fn = sum(t == label and g != label for t, g in zip(truth, guess, strict=True))
        total += 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return total / len(labels)
