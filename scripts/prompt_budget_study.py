"""Design study 7 (EVAL.md): budgets that depend on the prompt, chosen at prefill around the calibrated ones.

    python scripts/prompt_budget_study.py smollm2-135m --sparsity 0.5 --per-bucket 24 --threads 2

Dev split, through the compiled sessions (the Evaluator's), one prompt at a time: every layer of a batch keeps as
many neurons, so a per-prompt count needs batches of one. Each prompt runs its 32-token warm-up up to the last
token; its local statistic then sets the counts the last warm-up token selects with, and decode runs on them.

    share     each layer's local statistic as shares of its sum, sorted; whole STEPs go to the layers whose next
              step holds the largest share (a global top-K of the shares), the protected layers kept whole
    share a   (1 - a) x the calibrated counts + a x share's, in whole steps, the same total

Scored as ``eval --warmups 32`` scores ``*_after``: KL(dense || sparse) on the dense greedy continuation's tokens
after the warm-up, with each rule's paired 90% interval against the calibrated counts.
"""

import time

import numpy as np
from study_setup import dev_prompts, prompt_study_parser, study_evaluator

from glass_onnx.compiler.budgets import STEP, round_to_steps
from glass_onnx.compiler.compile import CompileOptions, calibrated_layer_budgets
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import global_prior
from glass_onnx.compiler.settings import METHODS, default_lam
from glass_onnx.compiler.sources import recipe_of
from glass_onnx.evaluation.evaluate import Config, keep_count
from glass_onnx.evaluation.metrics import paired_ratio_interval, token_metrics
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.protocol import KEEP
from glass_onnx.runtime.text import TextCodec

MIXES = (1.0, 0.5, 0.25)


def share_budgets(stats: np.ndarray, calibrated: np.ndarray, size: int) -> np.ndarray:
    """[layers, I] local statistic -> counts with equal marginal share per STEP; protected layers stay whole."""
    steps = -np.sort(-stats / stats.sum(1, keepdims=True), 1).reshape(len(stats), -1, STEP).sum(-1)
    protected = calibrated == size
    counts = np.where(protected, size // STEP, 1)
    for _ in range(calibrated.sum() // STEP - counts.sum()):
        gain = np.where(protected | (counts == size // STEP), -1.0,
                        steps[np.arange(len(steps)), np.minimum(counts, size // STEP - 1)])
        counts[gain.argmax()] += 1
    return counts * STEP


def mixed(share: np.ndarray, calibrated: np.ndarray, a: float, size: int) -> np.ndarray:
    """(1 - a) calibrated + a share, the protected layers whole, rounded to whole steps of the same total."""
    protected = calibrated == size
    target = np.where(protected, size, (1 - a) * calibrated + a * share).astype(float)
    rest = calibrated.sum() - size * protected.sum()
    target[~protected] *= rest / target[~protected].sum()
    return np.array(round_to_steps(target, int(calibrated.sum()), size, STEP))


def main() -> None:
    parser = prompt_study_parser(__doc__, per_bucket=24)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    dense, source = dense_artifact(args.model, attention="onnx")
    manifest = load_manifest(dense)
    codec = TextCodec(dense, manifest["tokenizer"])
    buckets = args.buckets.split(",")
    prompts = dev_prompts(codec, args, bool(manifest["tokenizer"]["instruct"]))
    values, _ = global_prior(manifest, source, METHODS["a-glass"], CompileOptions())
    size, layers = manifest["model"]["intermediate_size"], manifest["model"]["num_layers"]
    k = keep_count(args.sparsity, size, 1)
    calibrated = np.array(calibrated_layer_budgets(manifest, source, CompileOptions(), k)[0])
    evaluator = study_evaluator(dense, args, codec, {"activation": ranks(values)},
                                {(args.sparsity, 1): calibrated.tolist()})
    config = Config("a-glass", args.sparsity, default_lam(recipe_of(manifest)), budget="calibrated",
                    warmup=args.warmup)
    decoder, w = evaluator.artifact(config), args.warmup
    rules = ["uniform", "calibrated", *(f"share {a:g}" for a in MIXES)]
    kl = {(rule, b): [] for rule in rules for b in buckets}
    tokens_after = dict.fromkeys(buckets, 0)
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        tokens, live = evaluator.continuation([prompt])
        dense_logits, _ = evaluator.teacher_forced(evaluator.dense, [prompt], tokens)
        after = live[0, 1:] * (np.arange(args.gen_len - 1) >= w)
        tokens_after[prompt.bucket] += int(after.sum())
        for rule in rules:
            overrides = evaluator.overrides(config)
            if rule == "uniform":
                overrides[KEEP] = np.full(layers, k, np.int64)
            state = decoder.new_state(1)
            decoder.prefill_prompt(state, np.array([prompt.ids]), None, overrides,
                                   uncounted=evaluator.opening([prompt], decoder), warmup=w)
            opening = decoder.decode(state, tokens[:, : w - 1])
            if rule.startswith("share"):
                stats = np.stack([v.numpy()[0] for v in state.neuron_stats]).astype(np.float64)
                counts = mixed(share_budgets(stats, calibrated, size), calibrated, float(rule.split()[1]), size)
                state.overrides = {**overrides, KEEP: counts.astype(np.int64)}  # the last warm-up token selects
            logits = np.concatenate([opening, decoder.decode(state, tokens[:, w - 1 : -1])], 1)
            kl[(rule, prompt.bucket)].append(token_metrics(dense_logits[0], logits[0], tokens[0, 1:], after)["kl"])
        print(f"{i + 1}/{len(prompts)} prompts, {time.perf_counter() - started:.0f} s", flush=True)
    for b in buckets:
        base = np.array(kl[("calibrated", b)])
        for rule in rules:
            a = np.array(kl[(rule, b)])
            low, high = paired_ratio_interval(a, base)
            print(f"{args.model} {args.sparsity:.0%} {b:>5} {rule:<11} KL {a.sum() / tokens_after[b]:.4f}  "
                  f"vs calibrated {a.sum() / base.sum() - 1:+.1%} [{low - 1:+.1%}, {high - 1:+.1%}]  "
                  f"lower on {(a < base).sum()}/{len(a)} prompts")


if __name__ == "__main__":
    main()
