"""What harness reads about models without importing litellm agrees with litellm itself, on every model of
every shipped experiment; and a re-run served from the cache never imports litellm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from harness.endpoints import is_local_model
from harness.model_map import PROVIDER_KEYS, map_entry, missing_keys, provider_of
from harness.offline import import_litellm
from harness.pricing import ModelPrice
from tests.conftest import REPO, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
EXTRA = ["gpt-4o", "openai/gpt-4.1-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-pro", "claude-haiku-4-5"]


def shipped_models() -> list[str]:
    names: set[str] = set(EXTRA)
    for path in EXPERIMENTS:
        experiment = load_config(path)
        for model in experiment.models:
            names.add(model.model)
            if model.price is not None and model.price.like:
                names.add(model.price.like)
    return sorted(n for n in names if not is_local_model(n))


MODELS = shipped_models()


def test_the_shipped_experiments_name_cloud_models_this_test_covers() -> None:
    assert {"gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"} <= {
        m.removeprefix("openai/") for m in MODELS
    }


@pytest.mark.parametrize("model", MODELS)
def test_prices_and_windows_from_the_bundled_file_equal_litellms(model: str) -> None:
    litellm = import_litellm()
    found = map_entry(model)
    assert found is not None, f"{model} is not read from the bundled map"
    key, entry = found
    info = litellm.get_model_info(model)
    assert key == info["key"]
    ours, theirs = dict(ModelPrice.of(entry).rates), dict(ModelPrice.of(dict(info)).rates)
    # Every rate litellm's model info gives, at the same value; the file may price a tier more (litellm's
    # model info leaves out fields it does not declare, e.g. gemini-2.5-pro's flex rate for cached input
    # above 200k tokens), which is the map's own figure, not a guess.
    assert {k: ours.get(k) for k in theirs} == theirs
    for field in ("max_input_tokens", "max_output_tokens"):
        assert entry.get(field) == info.get(field)


@pytest.mark.parametrize("model", MODELS)
def test_provider_and_missing_keys_equal_litellms(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = import_litellm()
    assert provider_of(model) == litellm.get_llm_provider(model=model)[1]
    names = {n for keys in PROVIDER_KEYS.values() for n in keys}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    assert missing_keys(model) == litellm.validate_environment(model=model)["missing_keys"]
    for name in PROVIDER_KEYS[provider_of(model) or ""]:
        monkeypatch.setenv(name, "sk-test-set")
        assert missing_keys(model) == [] == litellm.validate_environment(model=model)["missing_keys"]
        monkeypatch.delenv(name)


def test_context_windows_equal_litellms_for_cloud_and_local_models() -> None:
    from harness.planner import context_limit
    from harness.providers.local import register_local_provider

    litellm = import_litellm()
    register_local_provider()
    for model in [*MODELS, "local/smollm2-135m", "local/all-minilm-l6-v2"]:
        assert context_limit(model) == litellm.get_model_info(model).get("max_input_tokens"), model


def test_remembered_token_counts_are_litellms_and_need_no_litellm_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rendered prompt of every shipped experiment (first items), for each of its models."""
    import harness.tokens as tokens
    from harness.planner import prepare

    monkeypatch.setenv("HARNESS_TOKEN_MEMO", str(tmp_path / "memo.sqlite"))
    tokens.token_memo.cache_clear()
    litellm = import_litellm()
    pairs = []
    for path in EXPERIMENTS:
        plan = prepare(load_config(path))
        for variant in plan.variants:
            for item in plan.eval_set.items[:3]:
                pairs.append((variant.model.model, plan.messages[(variant.prompt.name, item.id)]))
    tokens.token_memo.cache_clear()
    first = tokens.count_prompts(pairs)
    expected = []
    for model, messages in pairs:
        try:
            expected.append(int(litellm.token_counter(model=model, messages=messages)))
        except Exception:
            expected.append(int(litellm.token_counter(model="gpt-4o-mini", messages=messages)))
    assert first == expected and len(pairs) > 50

    def no_litellm(model: str, **what: object) -> int:
        raise AssertionError("counted again instead of read from the memo")

    tokens.token_memo.cache_clear()  # a new process's memo: reads the file
    monkeypatch.setattr(tokens, "_token_counter", no_litellm)
    assert tokens.count_prompts(pairs) == first
    tokens.token_memo.cache_clear()


AUDIT = """
import sys, traceback
where = []
def hook(event, args):
    if event == "import" and args[0] == "litellm" and not where:
        where.append("".join(traceback.format_stack(limit=12)))
sys.addaudithook(hook)
from harness.cli import main
code = main(sys.argv[1:])
print("LITELLM-IMPORTED" if where else "NO-LITELLM", file=sys.stderr)
print(where[0] if where else "", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
def test_a_rerun_served_from_the_cache_never_imports_litellm(tmp_path: Path, model_server: FakeModelServer) -> None:
    """A cloud model (priced and keyed from the map) behind the test server, and a local one; a first run
    fills the cache, and the second, tracked, is served from it and its process never imports litellm."""
    models = [fake_model(model_server, "gpt-4o-mini", api_key_env="TEST_KEY"), "local/lead"]
    models[0]["model"] = "openai/gpt-4o-mini"
    path = write_project(tmp_path, base_config(models))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TEST_KEY": "sk-test-key-123456",
        "HARNESS_TOKEN_MEMO": str(tmp_path / "memo.sqlite"),
    }

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-c", AUDIT, "run", str(path), *flags],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    first = run("--no-tracking")  # it only fills the cache: its tracking would be a second MLflow import
    assert "LITELLM-IMPORTED" in first.stderr  # it called the model
    second = run()
    assert "0 calls made" in second.stdout + second.stderr
    assert "NO-LITELLM" in second.stderr, second.stderr
