"""harness: controlled experiments that put LLM cost and quality side by side.

The public API is small on purpose: load a config, run it, read the records.
"""

from harness.config import ConfigError, Experiment, load_config
from harness.records import Record, Usage

__all__ = ["ConfigError", "Experiment", "Record", "Usage", "load_config"]
__version__ = "0.1.0"
