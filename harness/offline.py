"""Environment defaults that keep harness offline-safe and quiet.

Without these, `import litellm` fetches a price map from the web, `token_counter` stalls fetching a
tokenizer, and the `datasets`/MLflow stacks phone home. They are set with `setdefault` so a user who
wants the live price map can still export `LITELLM_LOCAL_MODEL_COST_MAP=False` themselves.
"""

from __future__ import annotations

import functools
import gc
import os

OFFLINE_DEFAULTS: dict[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


_SHORT_LIVED = {"process": False}
GC_YOUNG_THRESHOLD = 20_000
"""New container objects between two collections of the youngest generation, in the command line's process."""


def short_lived_process() -> None:
    """Mark this process as one that ends with its command (the `harness` command line), not a notebook or
    a program that runs experiment after experiment.

    There `import_litellm` puts what the import made out of the garbage collector's sight (`gc.freeze`):
    several hundred thousand objects that live as long as the process, which every full collection during
    a run walked again. A long-lived process is left alone: whatever it holds at that moment and drops
    later would never be collected.
    """
    _SHORT_LIVED["process"] = True
    collect_young_less_often()


def collect_young_less_often() -> None:
    """Collect this process's youngest generation every `GC_YOUNG_THRESHOLD` new container objects, not
    Python's default of 700: fewer passes over the run's records and responses (benchmarks/README.md
    has what it saved), for at most some 20,000 unreachable objects waiting longer to be freed."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def apply_offline_defaults() -> None:
    """Set the offline variables for this process and every process it starts."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


@functools.cache
def import_litellm():
    """Import litellm with offline defaults applied and its banner silenced.

    Centralised so that the slow import happens only in commands that call models.
    """
    apply_offline_defaults()
    import logging

    import litellm

    # harness reports every failure on the record; litellm's own log lines would only duplicate them.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    if _SHORT_LIVED["process"]:
        gc.freeze()
    return litellm
