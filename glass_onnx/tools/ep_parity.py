"""Check that an artifact gives the same logits and greedy tokens on another execution provider as on the CPU.

fp32 artifacts must agree within 1e-2 in every logit and in every greedy token. int4 artifacts within 5% of the
largest logit and in 90% of the greedy tokens: the CPU's MatMulNBits multiplies int8-quantised activations
(accuracy_level 4), other providers' float ones, so near-ties may flip.

Run: python -m glass_onnx.tools.ep_parity ARTIFACT [ARTIFACT ...] --provider cuda
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from glass_onnx.runtime import Generator, GlassError, load_manifest, open_decoder


def parity(artifact: str, provider: str, layout: str, steps: int = 16) -> dict:
    cpu = open_decoder(artifact, provider="cpu", layout=layout)
    other = open_decoder(artifact, provider=provider, layout=layout)
    generator = Generator(artifact, provider="cpu")
    ids = np.array([generator.encode("Write a short story about a lighthouse.")])
    a, b = cpu.new_state(), other.new_state()
    la, lb = cpu.prefill(a, ids), other.prefill(b, ids)
    worst, scale = float(np.abs(la - lb).max()), float(np.abs(la).max())
    same_kept = all(np.array_equal(x, y) for x, y in zip(cpu.kept_neurons(a), other.kept_neurons(b)))
    agree = 0
    for _ in range(steps):
        ta, tb = int(la[0, -1].argmax()), int(lb[0, -1].argmax())
        agree += ta == tb
        la, lb = cpu.decode(a, np.array([[ta]])), other.decode(b, np.array([[ta]]))
        worst, scale = max(worst, float(np.abs(la - lb).max())), max(scale, float(np.abs(la).max()))
    int4 = load_manifest(artifact)["weights"] == "int4"
    tolerance, needed = (0.05 * scale, 0.9 * steps) if int4 else (1e-2, steps)
    return {"artifact": artifact, "provider": provider, "layout": type(cpu).__name__, "max_abs_logit_diff": worst,
            "tolerance": tolerance, "same_kept_neurons": same_kept, "greedy_tokens_agreeing": f"{agree}/{steps}",
            "ok": worst < tolerance and agree >= needed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--provider", default="cuda")
    args = parser.parse_args(argv)
    try:
        results = [parity(a, args.provider, layout) for a in args.artifacts for layout in ("auto", "reference")]
    except GlassError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
