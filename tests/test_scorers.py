"""Every built-in scorer on known cases, and custom scorers by module:function."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.config import ScorerConfig
from harness.datasets import Item
from harness.records import Record
from harness.scorers import build_scorer, score_records
from harness.scorers.classification import macro_f1
from harness.scorers.numeric import final_number
from tests.conftest import REPO


def make(name: str, **options: object):
    return build_scorer(ScorerConfig(name=name, options=options), "exp.yaml", "scorers[0]")


def item(reference: str | None = None, references: list[str] | None = None) -> Item:
    refs = references or ([reference] if reference is not None else [])
    return Item(id="i", fields={}, reference=reference, references=refs)


def test_exact_match_normalisation_options() -> None:
    assert make("exact_match").score("  Paris ", item("paris")) == 1.0
    assert make("exact_match", case_sensitive=True).score("paris", item("Paris")) == 0.0
    assert make("exact_match").score("Paris.", item("paris")) == 0.0
    assert make("exact_match", strip_punctuation=True).score("Paris.", item("paris")) == 1.0
    assert make("exact_match").kind == "binary"


def test_contains_uses_value_or_reference() -> None:
    assert make("contains").score("The capital is Paris.", item("paris")) == 1.0
    assert make("contains", value="Lyon").score("The capital is Paris.", item("paris")) == 0.0


def test_regex_with_flags() -> None:
    assert make("regex", pattern=r"^answer: \d+$", flags="im").score("x\nANSWER: 42", item()) == 1.0
    assert make("regex", pattern=r"^\d+$").score("forty-two", item()) == 0.0


def test_json_valid_with_and_without_fence() -> None:
    assert make("json_valid").score('{"a": 1}', item()) == 1.0
    assert make("json_valid").score('```json\n{"a": 1}\n```', item()) == 1.0
    assert make("json_valid", allow_code_fence=False).score('```json\n{"a": 1}\n```', item()) == 0.0
    assert make("json_valid").score("{a: 1}", item()) == 0.0


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("#### 18", 18.0),
        ("She makes $1,234.50 a day.", 1234.5),
        ("It is -3 degrees", -3.0),
        ("first 5 then 7.", 7.0),
        ("no digits", None),
    ],
)
def test_final_number(text: str, number: float | None) -> None:
    assert final_number(text) == number


def test_numeric_match_gsm8k_style() -> None:
    scorer = make("numeric_match")
    assert scorer.score("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", item("18")) == 1.0
    assert scorer.score("The answer is 17", item("18")) == 0.0
    assert scorer.score("I don't know", item("18")) == 0.0


def test_rouge_best_over_references() -> None:
    scorer = make("rouge", variant="rouge1")
    one_ref = scorer.score("the cat sat", item("a dog ran"))
    best = scorer.score("the cat sat", item(references=["a dog ran", "the cat sat"]))
    assert one_ref == 0.0 and best == pytest.approx(1.0)
    partial = make("rouge", variant="rouge1").score("the cat", item("the cat sat on the mat"))
    assert partial == pytest.approx(2 * (1.0 * 2 / 6) / (1.0 + 2 / 6))


def test_accuracy_and_macro_f1_match_sklearn() -> None:
    from sklearn.metrics import f1_score

    truth = ["a", "a", "b", "b", "c", "c"]
    guess = ["a", "b", "b", "b", "c", "junk"]
    expected = f1_score(truth, guess, labels=["a", "b", "c"], average="macro")
    assert macro_f1(truth, guess) == pytest.approx(expected)
    scorer = make("accuracy")
    items = [item(t) for t in truth]
    outputs = [f"`{g.upper()}`" for g in guess]
    assert [scorer.score(o, i) for o, i in zip(outputs, items, strict=True)] == [1, 0, 1, 1, 1, 0]
    assert scorer.aggregate is not None
    assert scorer.aggregate(outputs, items)["macro_f1"] == pytest.approx(expected)


def test_accuracy_counts_answers_that_are_no_label_and_the_analysis_warns() -> None:
    """4 answers: one a sentence, one a label the references lack. Against the references' labels
    {positive, negative} 2 of 4 are no label; against the given labels (neutral included) 1 of 4."""
    from harness.analysis import MetricInfo, analyze_records
    from harness.config import AnalysisConfig, GateConfig
    from harness.records import Record
    from harness.summary import VariantSummary

    items = [item(r) for r in ("positive", "positive", "negative", "negative")]
    outputs = ["Positive", "I think it is positive.", "negative", "neutral"]
    assert make("accuracy").aggregate(outputs, items)["not_a_label"] == 0.5
    given = make("accuracy", labels=["positive", "negative", "neutral"])
    assert given.aggregate(outputs, items)["not_a_label"] == 0.25
    assert make("accuracy").aggregate(["positive", "negative"], items[1:3])["not_a_label"] == 0.0
    records = [
        Record.model_construct(variant=v, item_id=str(i), error=None, scores={"accuracy": float(i % 2)})
        for v in ("a", "b")
        for i in range(6)
    ]
    summaries = [
        VariantSummary("a", "m", "p", n_items=6, quality={"accuracy": 0.5, "accuracy.not_a_label": 0.0}),
        VariantSummary("b", "m", "p", n_items=6, quality={"accuracy": 0.5, "accuracy.not_a_label": 1.0}),
    ]
    analysis = analyze_records(
        summaries, records, [MetricInfo("accuracy", "binary")], "a", GateConfig(), AnalysisConfig()
    )
    warned = [w for w in analysis.warnings if "not one of the labels" in w]
    assert len(warned) == 1 and warned[0].startswith("b: 100% of its answers")


def test_errored_records_are_not_scored_as_zero() -> None:
    from harness.records import RecordError

    ok = Record(variant="v", item_id="i", model="m", prompt="p", prompt_hash="h", output="paris")
    failed = Record(
        variant="v",
        item_id="i",
        model="m",
        prompt="p",
        prompt_hash="h",
        error=RecordError(type="Timeout", message="slow"),
    )
    score_records([ok, failed], {"i": item("paris")}, [make("exact_match")])
    assert ok.scores == {"exact_match": 1.0}
    assert failed.scores == {"exact_match": None}


def test_scorer_needing_a_reference_records_why() -> None:
    record = Record(variant="v", item_id="i", model="m", prompt="p", prompt_hash="h", output="x")
    score_records([record], {"i": item()}, [make("exact_match")])
    assert record.scores["exact_match"] is None
    assert "no reference" in record.score_errors["exact_match"]


def test_custom_scorer_by_module_function() -> None:
    scorer = make("tests.custom_scorers:length_under", max_chars=5)
    assert scorer.score("short", item()) == 1.0
    assert scorer.score("much too long", item()) == 0.0
    assert scorer.kind == "binary", "a custom factory declares its kind with an attribute"


@pytest.mark.slow
def test_rouge_without_nltks_package_init_scores_exactly_as_with_it() -> None:
    """The light import of rouge-score (nltk's Porter stemmer alone) gives the very scores of the usual
    import, on SciTLDR's abstracts and summaries; and it leaves scikit-learn unimported."""
    import subprocess
    import sys

    script = """
import json, sys
light = sys.argv[1] == "light"
if not light:
    import nltk  # the whole package first: the usual import
from harness.scorers.rouge import import_rouge_scorer
scorer = import_rouge_scorer().RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
rows = [json.loads(line) for line in open("evals/scitldr/test.jsonl")][:60]
scores = [{k: v.fmeasure for k, v in scorer.score(r["reference"], r["document"]).items()} for r in rows]
print(json.dumps({"scores": scores, "sklearn": "sklearn" in sys.modules}))
"""
    out = {}
    for mode in ("light", "usual"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
        )
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["light"]["scores"] == out["usual"]["scores"] and len(out["light"]["scores"]) == 60
    assert not out["light"]["sklearn"]


def test_rouge_with_remembered_stems_equals_rouge_score_itself() -> None:
    from harness.scorers.rouge import import_rouge_scorer, rouge

    rows = [json.loads(line) for line in (REPO / "evals/scitldr/test.jsonl").read_text().splitlines()][:40]
    plain = import_rouge_scorer().RougeScorer(["rouge2"], use_stemmer=True)
    ours = rouge("rouge2")
    for row in rows:
        item = Item(id=row["id"], fields={}, reference=row["reference"])
        for _ in range(2):  # the second pass reads every stem from the cache
            assert ours(row["document"], item) == plain.score(row["reference"], row["document"])["rouge2"].fmeasure


@pytest.mark.parametrize(
    ("name", "options", "output", "expected"),
    [
        ("json_schema", {"schema": {"type": "object", "required": ["intent"]}}, '{"intent": "refund"}', 1.0),
        ("json_schema", {"schema": {"type": "object", "required": ["intent"]}}, '{"other": 1}', 0.0),
        ("json_schema", {"schema": {"type": "object"}}, '```json\n{"a": 1}\n```', 1.0),
        ("json_schema", {"schema": {"type": "object"}}, "not json", 0.0),
        ("length", {"max_words": 3}, "one two three", 1.0),
        ("length", {"min_words": 2, "max_words": 3}, "one", 0.0),
        ("one_of", {"labels": ["refund", "card_arrival"]}, " Refund. ", 1.0),
        ("one_of", {"labels": ["refund"]}, "a refund please", 0.0),
    ],
)
def test_reference_free_checks_score_without_a_reference(
    name: str, options: dict[str, Any], output: str, expected: float
) -> None:
    from harness.config import ScorerConfig
    from harness.datasets import Item
    from harness.scorers import build_scorer

    scorer = build_scorer(ScorerConfig(name=name, options=options), "test", "scorers[0]")
    assert not scorer.needs_reference
    assert scorer.score(output, Item(id="1", fields={})) == expected


def test_a_json_schema_that_is_not_one_is_a_config_error() -> None:
    from harness.config import ConfigError, ScorerConfig
    from harness.scorers import build_scorer

    with pytest.raises(ConfigError, match="not a JSON Schema"):
        build_scorer(ScorerConfig(name="json_schema", options={"schema": {"type": 12}}), "test", "scorers[0]")
