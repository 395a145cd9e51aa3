"""Check that an artifact gives the same logits and greedy tokens on another execution provider as on the CPU.

Run: python -m glass_onnx.tools.ep_parity ARTIFACT [ARTIFACT ...] --provider cuda
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from glass_onnx.runtime import Generator, GlassError, open_decoder


def parity(artifact: str, provider: str, layout: str, steps: int = 16) -> dict:
    cpu = open_decoder(artifact, provider="cpu", layout=layout)
    other = open_decoder(artifact, provider=provider, layout=layout)
    generator = Generator(artifact, provider="cpu")
    ids = np.array([generator.encode("Write a short story about a lighthouse.")])
    a, b = cpu.new_state(), other.new_state()
    la, lb = cpu.prefill(a, ids), other.prefill(b, ids)
    worst = float(np.abs(la - lb).max())
    same_kept = all(np.array_equal(x, y) for x, y in zip(cpu.kept_neurons(a), other.kept_neurons(b)))
    same_tokens = True
    for _ in range(steps):
        ta, tb = int(la[0, -1].argmax()), int(lb[0, -1].argmax())
        same_tokens &= ta == tb
        la, lb = cpu.decode(a, np.array([[ta]])), other.decode(b, np.array([[ta]]))
        worst = max(worst, float(np.abs(la - lb).max()))
    return {"artifact": artifact, "provider": provider, "layout": type(cpu).__name__, "max_abs_logit_diff": worst,
            "same_kept_neurons": same_kept,
            "same_greedy_tokens": same_tokens}


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
    return 0 if all(r["max_abs_logit_diff"] < 1e-2 and r["same_greedy_tokens"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
