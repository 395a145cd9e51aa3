"""Design study 6 (EVAL.md): can the model's own samples choose lam, once the prior is not computed from them?

    python scripts/lam_from_samples_study.py smollm2-135m --threads 1

The last VALIDATION_SAMPLES full-length samples are held out; a prior computed from the others and the shipped prior
(from every sample) each rank the neurons; A-GLASS at each lam selects from a held-out sample's first PROMPT_TOKENS
tokens and is scored on the next SCORED_TOKENS (uniform k, every layer sparse), as the budget calibration scores.
"""

import argparse

import numpy as np
import torch
from study_setup import full_rows, load_study

from glass_onnx.compiler import budget_calibration as calibration
from glass_onnx.compiler.budget_calibration import SparsifiedModel, kept_masks
from glass_onnx.compiler.priors import neuron_importance
from glass_onnx.evaluation.evaluate import keep_count
from glass_onnx.passes.glass_math import ranks

LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--sparsity", default="0.25,0.5,0.75")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model, ids, mask, shipped_rank, _, _, _ = load_study(args.model, args.threads)
    length = calibration.PROMPT_TOKENS + calibration.SCORED_TOKENS
    held = full_rows(ids, mask, length)[-calibration.VALIDATION_SAMPLES :]
    rest = np.setdiff1d(np.arange(len(ids)), held)
    held_out_rank = ranks(neuron_importance(model, ids[rest], mask[rest], "activation"))
    layers, size = shipped_rank.shape
    x = ids[held][:, :length]
    with torch.no_grad(), SparsifiedModel(model) as probe:
        dense, stats = probe.dense(x)
        for sparsity in (float(s) for s in args.sparsity.split(",")):
            k = keep_count(sparsity, size, 1)
            for tag, prior_rank in (("prior without them", held_out_rank), ("shipped prior", shipped_rank)):
                kl = {lam: probe.kl(x, dense, kept_masks(stats, prior_rank, lam, [k] * layers)) for lam in LAMS}
                best = min(kl, key=kl.get)
                print(f"{args.model} {sparsity:.0%} {tag}: " + "  ".join(f"lam {lam:g}: {v:.4f}" for lam, v in
                                                                          kl.items()) + f"  -> {best:g}", flush=True)


if __name__ == "__main__":
    main()
