#!/usr/bin/env bash
# One prepared GPU check (under 10 minutes on one GPU): compile SmolLM2 dense + A-GLASS 50%/75% on the CPU side,
# check CUDA EP parity with the CPU EP (logits, kept neurons, greedy tokens), then bench dense vs sparse decode
# on CUDA. Needs onnxruntime-gpu in place of onnxruntime. Figures go to $OUT (or ./gpu-results). The export uses
# standard attention (--attention onnx): the CUDA EP has no fp32 GroupQueryAttention kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi > "$out/nvidia-smi.txt" || true
$py -m glass_onnx.cli compile smollm2-135m --method a-glass --sparsity 0.5 --attention onnx -o "$out/aglass-0.5" --force
dense=$($py -c "from glass_onnx.compiler.compile import dense_artifact; print(dense_artifact('smollm2-135m', log=lambda *_: None, attention='onnx')[0])")
$py -m glass_onnx.tools.ep_parity "$dense" "$out/aglass-0.5" --provider cuda | tee "$out/parity.json"
$py -m glass_onnx.cli bench smollm2-135m --provider cuda --attention onnx --threads 1 --sparsity 0.5,0.75 --repeats 5 --no-rss --json \
  | tee "$out/bench-cuda.json"
