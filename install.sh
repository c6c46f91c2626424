#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Ubuntu machine (or a CI runner):
# the offline Fashion-MNIST dataset from Debian, and a virtual environment .venv with coar[dev].
# PyTorch is pinned to torch==2.11.0 / torchvision==0.26.0 (the CUDA wheels; they also run on CPU).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[install] note: Debian's dataset-fashion-mnist is not installed and cannot be installed here;" >&2
    echo "          set COAR_FASHION_MNIST to a directory with the IDX files (or let torchvision download them)." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "[install] pip install -e '.[dev]' (torch 2.11.0 wheels are large: about a minute)"
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -c "import torch, torchvision, coar; print(f'[install] torch {torch.__version__}, torchvision {torchvision.__version__}, coar {coar.__version__}')"
