"""Design study 8 (EVAL.md): where the prior's samples start, for an instruct model.

    python scripts/prior_start_study.py smollm2-135m --per-bucket 24 --threads 2

The shipped prior samples an instruct model's answers to an empty chat turn. The candidates, each 64 samples of
256 tokens at temperature 1, seed 0, every real token counted (as the shipped prior counts them):

    turn    the answer to an empty user turn (shipped)
    user    the model writes the user's turn too: from the template's opening it samples an instruction (up to
            USER_TOKENS, to its end-of-turn), the template closes the turn, and the model answers
    plain   no template: from BOS, the model's plain text
    mixed   half turn, half plain

Each prior ranks the neurons for A-GLASS (lam the model's, at 25% and 50%) and the static global-a mask (50%), on
the shipped calibrated counts and the 32-token warm-up, through the compiled sessions (the Evaluator's) on the dev
split. Scored as ``eval --warmups 32`` scores ``*_after``: KL(dense || sparse) on the dense greedy continuation's
tokens after the warm-up, each prior with its paired 90% interval against the shipped one.
"""

import time

import numpy as np
import torch
from study_setup import dev_prompts, prompt_study_parser, study_evaluator

from glass_onnx.compiler.compile import CompileOptions, calibrated_layer_budgets
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import PriorSettings, compute_samples, neuron_importance, sample_sequences
from glass_onnx.compiler.settings import default_lam
from glass_onnx.compiler.sources import load_model, recipe_of
from glass_onnx.evaluation.evaluate import Config, keep_count
from glass_onnx.evaluation.metrics import paired_ratio_interval, token_metrics
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.text import TextCodec

USER_TOKENS = 64


def template_parts(tokenizer) -> tuple[list[int], list[int]]:
    """The chat template's opening (up to the user's content) and its closing (after it, to the answer)."""
    empty = tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True,
                                          return_dict=False)
    some = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                          return_dict=False)
    n = next(i for i, (a, b) in enumerate(zip(empty, some)) if a != b)
    return list(empty[:n]), list(empty[n:])


def self_instructed(model, tokenizer, settings: PriorSettings):
    """[N, L] ids and mask: the model writes a user turn, the template closes it, the model answers."""
    opening, closing = template_parts(tokenizer)
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    torch.manual_seed(settings.seed)
    rows = []
    with torch.no_grad():
        for b in range(0, settings.samples, 16):
            n = min(16, settings.samples - b)
            start = torch.tensor([opening] * n)
            out = model.generate(start, attention_mask=torch.ones_like(start), do_sample=True, top_k=0, top_p=1.0,
                                 temperature=settings.temperature, max_new_tokens=USER_TOKENS, pad_token_id=pad,
                                 eos_token_id=eos)[:, len(opening):].tolist()
            users = [row[: next((i for i, t in enumerate(row) if t in eos), len(row))] for row in out]
            prompts = [opening + u + closing for u in users]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            answer = model.generate(ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                    temperature=settings.temperature, max_new_tokens=settings.tokens - USER_TOKENS,
                                    min_new_tokens=1, pad_token_id=pad, eos_token_id=eos)[:, width:]
            for p, a in zip(prompts, answer.tolist()):
                end = next((i + 1 for i, t in enumerate(a) if t in eos), len(a))  # up to and including EOS
                rows.append(p + a[:end])
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def main() -> None:
    parser = prompt_study_parser(__doc__, per_bucket=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense, source = dense_artifact(args.model, attention="onnx")
    manifest = load_manifest(dense)
    options = CompileOptions()
    settings = PriorSettings("activation", options.prior_samples, options.prior_tokens, 1.0, options.prior_seed)
    model, tokenizer = load_model(source)
    started = time.perf_counter()
    turn = compute_samples(model, tokenizer, settings, True, source.cache_key())  # the shipped prior's samples
    plain = sample_sequences(model, tokenizer, settings, instruct=False)
    user = self_instructed(model, tokenizer, settings)
    half = settings.samples // 2
    width = max(turn[0].shape[1], plain[0].shape[1])
    padded = [torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in (*turn, *plain)]
    mixed = (torch.cat([padded[0][:half], padded[2][:half]]), torch.cat([padded[1][:half], padded[3][:half]]))
    samples = {"turn": turn, "user": user, "plain": plain, "mixed": mixed}
    priors = {name: ranks(neuron_importance(model, ids, mask, "activation")) for name, (ids, mask) in samples.items()}
    print(f"samples and priors in {time.perf_counter() - started:.0f} s; real tokens: " +
          ", ".join(f"{n} {int(m.sum())}" for n, (_, m) in samples.items()), flush=True)
    example = user[0][0][user[1][0].bool()].tolist()
    print("a self-instructed sample:", repr(tokenizer.decode(example)[:400]), flush=True)
    del model

    codec = TextCodec(dense, manifest["tokenizer"])
    buckets = args.buckets.split(",")
    prompts = dev_prompts(codec, args)
    size = manifest["model"]["intermediate_size"]
    lam = default_lam(recipe_of(manifest))
    budgets = {}
    for sparsity in (0.25, 0.5):
        budgets[(sparsity, 1)] = calibrated_layer_budgets(manifest, source, options, keep_count(sparsity, size))[0]
    evaluator = study_evaluator(dense, args, codec, {}, budgets)
    grid = [("griffin", s, None) for s in (0.25, 0.5)] + \
        [(method, s, name) for name in priors for method, s in (("a-glass", 0.25), ("a-glass", 0.5),
                                                                ("global-a", 0.5))]
    kl = {(g, b): [] for g in grid for b in buckets}
    tokens_after = dict.fromkeys(buckets, 0)
    for bucket in buckets:
        rows = [p for p in prompts if p.bucket == bucket]
        for i in range(0, len(rows), evaluator.batch):
            batch = rows[i : i + evaluator.batch]
            tokens, live = evaluator.continuation(batch)
            dense_logits, _ = evaluator.teacher_forced(evaluator.dense, batch, tokens)
            after = live[:, 1:] * (np.arange(args.gen_len - 1) >= args.warmup)
            tokens_after[bucket] += int(after.sum())
            for method, sparsity, name in grid:
                evaluator.priors = {"activation": priors[name]} if name else {}
                config = Config(method, sparsity, lam if method == "a-glass" else (0.0 if name else 1.0),
                                budget="calibrated", warmup=args.warmup)
                logits, _ = evaluator.teacher_forced(evaluator.artifact(config), batch, tokens,
                                                      evaluator.overrides(config), args.warmup)
                for r in range(len(batch)):
                    kl[((method, sparsity, name), bucket)].append(
                        token_metrics(dense_logits[r], logits[r], tokens[r, 1:], after[r])["kl"])
            print(f"{bucket}: {i + len(batch)}/{len(rows)} prompts, {time.perf_counter() - started:.0f} s", flush=True)
    for bucket in buckets:
        for method, sparsity, name in grid:
            a = np.array(kl[((method, sparsity, name), bucket)])
            line = f"{args.model} {bucket:>5} {method:<8} {sparsity:.0%} {name or '-':<6} KL " \
                   f"{a.sum() / tokens_after[bucket]:.4f}"
            if name and name != "turn":
                base = np.array(kl[((method, sparsity, "turn"), bucket)])
                low, high = paired_ratio_interval(a, base)
                line += f"  vs turn {a.sum() / base.sum() - 1:+.1%} [{low - 1:+.1%}, {high - 1:+.1%}]"
            print(line, flush=True)


if __name__ == "__main__":
    main()
