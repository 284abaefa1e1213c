#!/usr/bin/env bash
# Install metalab into the active Python environment: `bash scripts/install.sh [dev]`.
# torch is installed first, pinned, so that no dependency pulls a different (CUDA) build;
# where a torch is already present (a CUDA PyTorch image, say) it is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python -m pip install --upgrade --quiet pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==${METALAB_TORCH_VERSION:-2.13.0}"
if [ -n "$extras" ]; then
  python -m pip install --quiet -e ".[${extras}]"
else
  python -m pip install --quiet -e .
fi
python -c "import torch, metalab; print(f'metalab {metalab.__version__} with torch {torch.__version__}')"
