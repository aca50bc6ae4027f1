#!/usr/bin/env bash
# The GPU acceptance check (bench/gpu_check.py says what it runs): `make gpu-check-prepare` here,
# then on the GPU machine `bench/gpu_check.sh`; `bench/gpu_check.sh --dry-run` anywhere.
# The wheels in .gpu-check/wheels (DeepSpeed and what the GPU image lacks) are installed into a
# private folder on PYTHONPATH, beside the image's own torch, transformers and NVML.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${GPU_CHECK_STAGE:-.gpu-check}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
dry_run=no
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=yes; done
if [ "$dry_run" = no ] && compgen -G "$STAGE/wheels/*.whl" > /dev/null; then
  site=$(mktemp -d /tmp/llm2llm-site.XXXXXX)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$STAGE"/wheels/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" bench/gpu_check.py --stage "$STAGE" "$@"
