#!/usr/bin/env bash
# Create .venv and install fomoflux with its pinned dependencies. Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.fomoflux-requirements
if ! cmp -s requirements.txt "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  cp requirements.txt "$stamp"
fi
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c "import torch, open_clip, snakemake, fomoflux; print('fomoflux environment ready: torch', torch.__version__, 'open_clip', open_clip.__version__)"
