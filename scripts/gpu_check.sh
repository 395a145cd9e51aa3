#!/usr/bin/env bash
# One prepared GPU check (under 10 minutes on one GPU): compile SmolLM2 A-GLASS 50% in fp32 and in int4 on the CPU
# side, check CUDA EP parity with the CPU EP (logits, kept neurons, greedy tokens; ep_parity's tolerances), then
# bench dense vs sparse decode on CUDA for both weight formats. Needs onnxruntime-gpu in place of onnxruntime.
# Figures go to $OUT (or ./gpu-results). The export uses standard attention (--attention onnx): the CUDA EP has no
# fp32 GroupQueryAttention kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi > "$out/nvidia-smi.txt" || true
artifacts=()
for weights in fp32 int4; do
  $py -m glass_onnx.cli compile smollm2-135m --method a-glass --sparsity 0.5 --attention onnx --weights $weights \
    -o "$out/aglass-0.5-$weights" --force
  artifacts+=("$("$py" -c "from glass_onnx.compiler.export import dense_artifact; \
print(dense_artifact('smollm2-135m', attention='onnx', weights='$weights')[0])")" "$out/aglass-0.5-$weights")
done
$py -m glass_onnx.tools.ep_parity "${artifacts[@]}" --provider cuda | tee "$out/parity.json" || echo "parity: FAILED"
$py -m glass_onnx.cli bench smollm2-135m --provider cuda --attention onnx --weights fp32,int4 --threads 1 \
  --sparsity 0.5,0.75 --repeats 5 --no-rss --json | tee "$out/bench-cuda.json"
