"""Design study 5 (EVAL.md): does a local search on the samples' joint KL improve the calibrated budget's choice?

    python scripts/budget_search_study.py smollm2-135m --sparsity 0.5 --threads 1

From a start allocation (the calibrated choice, then uniform), each round takes the gradient of the joint KL (every
layer sparsified at once, as in ``budget_calibration``) with respect to each layer's 0/1 keep mask on the profile
samples, predicts each layer's gain from one more STEP of its next-ranked neurons and loss from one fewer, moves up
to 4 steps from the cheapest donors to the best receivers, and keeps the move if the true KL falls (halving the
moves otherwise). The result is scored on the held-out samples the calibrated choice was scored on.
"""

import argparse
import time

import numpy as np
import torch
from study_setup import full_rows, load_study

from glass_onnx.compiler import budget_calibration as calibration
from glass_onnx.compiler.budget_calibration import SparsifiedModel, calibrated_budgets, kept_masks
from glass_onnx.compiler.budgets import STEP, LayerProfile, candidate_budgets
from glass_onnx.compiler.compile import CompileOptions
from glass_onnx.evaluation.evaluate import keep_count
from glass_onnx.passes.glass_math import fused_order

MOVES, ROUNDS = 4, 20


def fused_orders(stats, prior_rank, lam):
    """[layers] of [samples, I]: each sample's neurons in A-GLASS order (fuse_rank's order, not only its top k)."""
    return [np.array([fused_order(s, prior_rank[layer], lam) for s in layer_stats])
            for layer, layer_stats in enumerate(stats)]


class JointKL:
    """The profile samples' joint KL for an allocation, and its gradient per layer keep mask."""

    def __init__(self, probe: SparsifiedModel, x, prior_rank, lam):
        with torch.no_grad():
            self.dense, stats = probe.dense(x)
        self.probe, self.x, self.orders = probe, x, fused_orders(stats, prior_rank, lam)

    def masks(self, budgets) -> list:
        """Each layer's [samples, I] 0/1 keep mask: every sample's first k_l neurons in A-GLASS order."""
        masks = []
        for order, k in zip(self.orders, budgets):
            keep = np.zeros(order.shape, np.float32)
            np.put_along_axis(keep, order[:, :k], 1.0, axis=1)
            masks.append(torch.from_numpy(keep))
        return masks

    def __call__(self, budgets):
        masks = [m.requires_grad_() for m in self.masks(budgets)]
        kl = self.probe.kl_tensor(self.x, self.dense, dict(enumerate(masks)))
        kl.backward()
        return float(kl.detach()), [m.grad.numpy() for m in masks]

    def step_gradient(self, grad, layer, start, stop):
        rows = np.arange(len(self.x))[:, None]
        return float(grad[layer][rows, self.orders[layer][:, start:stop]].sum())


def search(joint: JointKL, start: list[int], size: int, tag: str) -> list[int]:
    budgets, began = list(start), time.perf_counter()
    current, grad = joint(budgets)
    print(f"{tag}: profile KL {current:.4f}", flush=True)
    for round_ in range(ROUNDS):
        gain = np.array([joint.step_gradient(grad, layer, k, k + STEP) if k < size else np.inf
                         for layer, k in enumerate(budgets)])
        loss = np.array([-joint.step_gradient(grad, layer, k - STEP, k) if k > STEP else np.inf
                         for layer, k in enumerate(budgets)])
        pairs, used = [], set()
        for to, frm in zip(np.argsort(gain), np.argsort(loss)):
            if {to, frm} & used or to == frm or gain[to] + loss[frm] >= 0:
                continue
            pairs.append((int(to), int(frm)))
            used |= {to, frm}
            if len(pairs) == MOVES:
                break
        n = len(pairs)
        while n:
            trial = list(budgets)
            for to, frm in pairs[:n]:
                trial[to], trial[frm] = trial[to] + STEP, trial[frm] - STEP
            kl, trial_grad = joint(trial)
            if kl < current:
                budgets, current, grad = trial, kl, trial_grad
                break
            n //= 2
        print(f"{tag} round {round_}: profile KL {current:.4f}, moved {pairs[:n] or 'nothing'} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
        if not n:
            break
    return budgets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model, ids, mask, prior_rank, lam, manifest, source = load_study(args.model, args.threads)
    layers, size = prior_rank.shape
    k = keep_count(args.sparsity, size, 1)
    _, record = calibrated_budgets(manifest, source, CompileOptions(), prior_rank, lam, k)
    profile = LayerProfile(np.array(record["outlier_ratio"]), np.array(record["sensitivity"]))
    candidates = candidate_budgets(profile, k, size)
    length = calibration.PROMPT_TOKENS + calibration.SCORED_TOKENS
    x = ids[full_rows(ids, mask, length)][:, :length]
    profiled = min(calibration.PROFILE_SAMPLES, len(x) // 2)
    profile_x, held_out = x[:profiled], x[profiled : profiled + calibration.VALIDATION_SAMPLES]
    with SparsifiedModel(model) as probe:
        joint = JointKL(probe, profile_x, prior_rank, lam)
        with torch.no_grad():
            held_dense, held_stats = probe.dense(held_out)
        for name in dict.fromkeys([record["chosen"], "uniform"]):
            found = search(joint, candidates[name], size, f"from {name}")
            with torch.no_grad():
                held = probe.kl(held_out, held_dense, kept_masks(held_stats, prior_rank, lam, found))
            print(f"FROM {name}: held-out KL {held:.4f} (the start {record['sample_kl'][name]:.4f}, uniform "
                  f"{record['sample_kl']['uniform']:.4f})\n  {found}", flush=True)


if __name__ == "__main__":
    main()
