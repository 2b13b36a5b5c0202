"""`harness init`: a dataset harness has never seen becomes a config and a prompt that run at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_cli import harness

GOOD = ["Loved every minute of it", "A warm and funny film", "Brilliant acting and a clever plot"]
BAD = ["Dull and far too long", "I walked out halfway", "The plot made no sense"]


def reviews(folder: Path) -> Path:
    """36 film reviews: free text, and a label column with two labels."""
    rows = [
        {
            "id": f"r{i:02d}",
            "review": f"{(GOOD if i % 2 == 0 else BAD)[i % 3]}, said reviewer {i}.",
            "label": "positive" if i % 2 == 0 else "negative",
        }
        for i in range(36)
    ]
    path = folder / "data" / "reviews.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_init_on_a_new_labelled_dataset_then_run_gives_scores(tmp_path: Path) -> None:
    reviews(tmp_path)
    init = harness("init", "data/reviews.jsonl", cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    out = " ".join(init.stdout.split())
    assert "input <- column 'review', reference <- column 'label', id <- column 'id'" in out
    assert "the references are 2 labels: scorers accuracy" in out
    config = yaml.safe_load((tmp_path / "experiments" / "reviews.yaml").read_text())
    assert config["dataset"]["path"] == "data/reviews.jsonl"
    assert config["constants"]["labels"] == ["negative", "positive"]
    assert "{{ review }}" in (tmp_path / "prompts" / "reviews.j2").read_text()
    run = harness("run", "experiments/reviews.yaml", "--limit", "4", "--no-tracking", cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "accuracy.not_a_label" in run.stdout and "4 calls made" in run.stdout
    again = harness("init", "data/reviews.jsonl", cwd=tmp_path)
    assert again.returncode == 2 and "never overwrites" in again.stderr


@pytest.mark.slow
def test_init_proposes_scorers_from_what_the_references_hold(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = {"document": "Paper 1 studies topic 1 with a long method section.", "summary": "topic 1"}
    (data / "papers.jsonl").write_text(json.dumps(first) + "\n", encoding="utf-8")
    missing = harness("init", "data/papers.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and "--reference" in missing.stderr and "summary" in missing.stderr
    rows = [
        {"document": f"Paper {i} studies topic {i} in depth.", "summary": f"a study of topic {i} and more"}
        for i in range(60)
    ]
    (data / "papers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    free = harness("init", "data/papers.jsonl", "--reference", "summary", cwd=tmp_path)
    assert free.returncode == 0, free.stderr
    assert "free text: scorers rouge, embedding_similarity" in " ".join(free.stdout.split())
    sums = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(30)]
    (data / "sums.csv").write_text("question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in sums))
    numbers = harness("init", "data/sums.csv", "--name", "arith", cwd=tmp_path)
    assert numbers.returncode == 0, numbers.stderr
    assert "numbers: scorers numeric_match" in " ".join(numbers.stdout.split())
    assert (tmp_path / "experiments" / "arith.yaml").is_file()
    check = harness("estimate", "experiments/arith.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
