"""Every kind of bad input gives one ConfigError naming file, field and fix, before any model call."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import ConfigError, load_config
from harness.planner import prepare
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        prepare(load_config(path))
    return info.value


def lead_config(**overrides: object) -> dict:
    return base_config(["local/lead"], **overrides)


def test_valid_config_loads_with_shorthands(tmp_path: Path) -> None:
    config = lead_config(scorers=["rouge", {"exact_match": {"strip_punctuation": True}}])
    experiment = load_config(write_project(tmp_path, config))
    assert experiment.prompts[0].name == "terse"
    assert experiment.models[0].model == "local/lead"
    assert experiment.scorers[1].options == {"strip_punctuation": True}


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write_project(tmp_path, lead_config())
    path.write_text("name: x\ndataset: [unclosed\n", encoding="utf-8")
    err = error_of(path)
    assert err.file == str(path) and "line" in err.field and "YAML" in err.problem


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    config = lead_config(params={"temperature": 0})
    config["concurency"] = 3
    err = error_of(write_project(tmp_path, config))
    assert err.field == "concurency" and "unknown key" in err.problem
    assert "concurrency" in err.fix


def test_unknown_nested_key_lists_allowed(tmp_path: Path) -> None:
    config = lead_config()
    config["dataset"]["limt"] = 3
    err = error_of(write_project(tmp_path, config))
    assert err.field == "dataset.limt" and "limit" in err.fix


def test_wrong_type_names_field(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(concurrency="many")))
    assert err.field == "concurrency" and "whole number" in err.fix


def test_missing_required_field(tmp_path: Path) -> None:
    config = lead_config()
    del config["scorers"]
    err = error_of(write_project(tmp_path, config))
    assert err.field == "scorers" and "missing" in err.problem


def test_missing_config_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope.yaml")
    assert "no such config file" in err.problem


def test_missing_dataset_file(tmp_path: Path) -> None:
    config = lead_config()
    config["dataset"]["path"] = "evals/missing.jsonl"
    err = error_of(write_project(tmp_path, config))
    assert err.field == "dataset.path" and "missing.jsonl" in err.problem


def test_empty_dataset(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(), items=[]))
    assert err.field == "dataset" and "no items" in err.problem


def test_non_utf8_dataset(tmp_path: Path) -> None:
    path = write_project(tmp_path, lead_config())
    (tmp_path / "evals" / "data.jsonl").write_bytes(b'{"id": "a", "document": "caf\xe9"}\n')
    err = error_of(path)
    assert "UTF-8" in err.problem


def test_duplicate_item_ids(tmp_path: Path) -> None:
    items = [{"id": "a", "document": "x.", "reference": "x"}, {"id": "a", "document": "y.", "reference": "y"}]
    err = error_of(write_project(tmp_path, lead_config(), items=items))
    assert err.field == "dataset.fields.id" and "duplicate" in err.problem


def test_field_mapping_to_missing_column(tmp_path: Path) -> None:
    config = lead_config()
    config["dataset"]["fields"]["reference"] = "summary"
    err = error_of(write_project(tmp_path, config))
    assert err.field == "dataset.fields.reference" and "document" in err.fix


def test_template_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    path = write_project(tmp_path, lead_config(), templates={"terse": "Hello\n{{ document "})
    err = error_of(path)
    assert err.file.endswith("terse.j2") and err.field.startswith("line")


def test_undefined_template_variable_found_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    template = "{% block user %}{{ document }} {{ abstract }}{% endblock %}"
    config = base_config([fake_model(model_server, price=PRICE)])
    err = error_of(write_project(tmp_path, config, templates={"terse": template}))
    assert "'abstract' is undefined" in err.problem and "document" in err.fix
    assert model_server.requests == []


def test_unknown_scorer_suggests(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(scorers=["rogue"])))
    assert err.field == "scorers[0]" and "rouge" in err.fix


def test_unknown_scorer_option(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(scorers=[{"rouge": {"varient": "rouge1"}}])))
    assert err.field == "scorers[0].options" and "variant" in err.fix


def test_bad_scorer_option_value(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(scorers=[{"rouge": {"variant": "rouge9"}}])))
    assert "rougeL" in err.problem


def test_cloud_model_without_price_is_an_error(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, base_config(["gemini/gemini-1.5-flash"])))
    assert "no price known" in err.problem and "input_cost_per_token" in err.fix


def test_price_override_makes_unknown_model_runnable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "test-not-a-key")
    config = base_config([{"model": "gemini/gemini-1.5-flash", "price": PRICE}])
    plan = prepare(load_config(write_project(tmp_path, config)))
    assert plan.variants[0].price.source == "config override"


def test_unknown_provider(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, base_config(["nosuchprovider-model-xyz"])))
    assert err.field == "models[0].model" and "provider" in err.problem


def test_unknown_local_model(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, base_config(["local/gpt-9"])))
    assert "unknown local model" in err.problem


def test_negative_limit(tmp_path: Path) -> None:
    config = lead_config()
    config["dataset"]["limit"] = -1
    err = error_of(write_project(tmp_path, config))
    assert err.field == "dataset.limit"


def test_baseline_must_name_a_model_and_prompt(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, lead_config(baseline={"model": "gpt-5", "prompt": "terse"})))
    assert err.field == "baseline.model" and "local/lead" in err.fix
    err = error_of(write_project(tmp_path, lead_config(baseline={"model": "local/lead", "prompt": "long"})))
    assert err.field == "baseline.prompt" and "terse" in err.fix


def test_duplicate_model_names(tmp_path: Path) -> None:
    err = error_of(write_project(tmp_path, base_config(["local/lead", "local/lead"])))
    assert "unique" in err.problem


def test_missing_key_skips_or_fails_with_strict(tmp_path: Path) -> None:
    path = write_project(tmp_path, base_config(["local/lead", "openai/gpt-4o-mini"]))
    plan = prepare(load_config(path))
    skipped = {v.name: v.skipped for v in plan.variants}
    assert skipped["local/lead:terse"] is None
    assert "OPENAI_API_KEY" in (skipped["openai/gpt-4o-mini:terse"] or "")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        prepare(load_config(path), strict=True)


def test_dataset_limit_and_seeded_shuffle(tmp_path: Path) -> None:
    items = [{"id": str(i), "document": f"Doc {i}.", "reference": "x"} for i in range(30)]
    config = lead_config()
    config["dataset"].update({"limit": 5, "shuffle": True, "seed": 3})
    path = write_project(tmp_path, config, items=items)
    first = prepare(load_config(path)).eval_set
    second = prepare(load_config(path)).eval_set
    assert [i.id for i in first.items] == [i.id for i in second.items]
    assert len(first.items) == 5 and [i.id for i in first.items] != ["0", "1", "2", "3", "4"]
    assert first.fingerprint == second.fingerprint


def test_csv_and_parquet_datasets_load(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": ["a", "b"], "document": ["One. Two.", "Three."], "reference": ["one", "three"]})
    for suffix in ("csv", "parquet"):
        config = lead_config()
        config["dataset"]["path"] = f"evals/data.{suffix}"
        path = write_project(tmp_path, config)
        target = tmp_path / "evals" / f"data.{suffix}"
        frame.to_csv(target, index=False) if suffix == "csv" else frame.to_parquet(target)
        plan = prepare(load_config(path))
        assert [i.id for i in plan.eval_set.items] == ["a", "b"]
        assert plan.eval_set.items[1].reference == "three"


def test_repeated_scorer_names_get_distinct_labels(tmp_path: Path) -> None:
    config = lead_config(scorers=[{"rouge": {"variant": "rougeL"}}, {"rouge": {"variant": "rouge2"}}])
    plan = prepare(load_config(write_project(tmp_path, config)))
    assert [s.label for s in plan.scorers] == ["rouge_rougeL", "rouge_rouge2"]
    config = lead_config(scorers=["rouge", "rouge"])
    err = error_of(write_project(tmp_path, config))
    assert "scorers names must be unique" in err.problem
