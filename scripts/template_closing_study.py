"""Design study 10 (EVAL.md): should the chat template's closing leave the prompt statistic too?

    python scripts/template_closing_study.py smollm2-135m --per-bucket 60 --threads 2

The runtime leaves the template's opening (system block, user header) out of GLASS's prompt statistic (design
study 2); its closing (end of turn, assistant header: the same few tokens after every instruction) still counts.
Study 2 measured about 1% from leaving it out too, without the warm-up. This asks the same with the shipped
32-token warm-up: the closing is prefilled, then the statistic is put back as it was before it, and the warm-up
adds the answer's opening, from which the kept neurons are chosen.

GRIFFIN and A-GLASS (the model's lam) at 25% and 50%, the shipped calibrated counts, on the dev split's chat
prompts through the compiled sessions (the Evaluator's), scored as ``eval --warmups 32`` scores ``*_after``: KL on
the dense greedy continuation's tokens after the warm-up, with the paired 90% interval against the shipped rule.
"""

import time

import numpy as np
from study_setup import dev_prompts, prompt_study_parser, study_evaluator

from glass_onnx.compiler.compile import CompileOptions, calibrated_layer_budgets
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import global_prior
from glass_onnx.compiler.settings import METHODS, default_lam
from glass_onnx.compiler.sources import recipe_of
from glass_onnx.evaluation.evaluate import Config, Evaluator, keep_count
from glass_onnx.evaluation.metrics import paired_ratio_interval, token_metrics
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.text import TextCodec


class ClosingLeftOut(Evaluator):
    """teacher_forced with the template's last ``closing`` prompt tokens prefilled but not counted."""

    closing = 0

    def teacher_forced(self, decoder, prompts, tokens, overrides=None, warmup: int = 0):
        if not (self.closing and decoder.glass):
            return super().teacher_forced(decoder, prompts, tokens, overrides, warmup)
        state = decoder.new_state(len(prompts))
        opening = self.opening(prompts, decoder)
        ids, mask = self.prompt_batch(prompts, opening)
        c = self.closing
        decoder.prefill_prompt(state, ids[:, :-c], mask[:, :-c], overrides, uncounted=opening)
        counted = state.neuron_stats
        decoder.prefill(state, ids[:, -c:], mask[:, -c:], overrides)
        state.neuron_stats = counted
        state.warmup_left, state.overrides = warmup, overrides  # the warm-up's prefill chooses from the restored
        logits = decoder.decode(state, tokens[:, :-1])
        return logits, decoder.kept_neurons(state)


def main() -> None:
    parser = prompt_study_parser(__doc__, 60)
    parser.set_defaults(buckets="chat")
    args = parser.parse_args()
    dense, source = dense_artifact(args.model, attention="onnx")
    manifest = load_manifest(dense)
    codec = TextCodec(dense, manifest["tokenizer"])
    prompts = dev_prompts(codec, args)
    empty = codec.encode("", chat=True)
    opening = codec.template_prefix_length(list(prompts[0].ids))
    closing = empty[opening:]
    assert all(list(p.ids[-len(closing):]) == closing for p in prompts), "a prompt does not end with the closing"
    print(f"{len(prompts)} chat prompts; opening {opening} tokens, closing {len(closing)}: "
          f"{codec.decode(closing)!r}", flush=True)
    size, lam = manifest["model"]["intermediate_size"], default_lam(recipe_of(manifest))
    options = CompileOptions()
    budgets = {(s, 1): calibrated_layer_budgets(manifest, source, options, keep_count(s, size))[0] for s in (0.25, 0.5)}
    prior = ranks(global_prior(manifest, source, METHODS["a-glass"], options)[0])
    evaluator = study_evaluator(dense, args, codec, {"activation": prior}, budgets, ClosingLeftOut)
    grid = [(m, s) for s in (0.25, 0.5) for m in ("griffin", "a-glass")]
    kl = {(g, rule): [] for g in grid for rule in ("counted", "left out")}
    tokens_after, started = 0, time.perf_counter()
    for i in range(0, len(prompts), evaluator.batch):
        batch = prompts[i : i + evaluator.batch]
        tokens, live = evaluator.continuation(batch)
        evaluator.closing = 0
        dense_logits, _ = evaluator.teacher_forced(evaluator.dense, batch, tokens)
        after = live[:, 1:] * (np.arange(args.gen_len - 1) >= args.warmup)
        tokens_after += int(after.sum())
        for method, sparsity in grid:
            config = Config(method, sparsity, lam if method == "a-glass" else 1.0, budget="calibrated",
                            warmup=args.warmup)
            for rule, c in (("counted", 0), ("left out", len(closing))):
                evaluator.closing = c
                logits, _ = evaluator.teacher_forced(evaluator.artifact(config), batch, tokens,
                                                      evaluator.overrides(config), args.warmup)
                for r in range(len(batch)):
                    kl[((method, sparsity), rule)].append(
                        token_metrics(dense_logits[r], logits[r], tokens[r, 1:], after[r])["kl"])
        print(f"{i + len(batch)}/{len(prompts)} prompts, {time.perf_counter() - started:.0f} s", flush=True)
    for method, sparsity in grid:
        counted, left = (np.array(kl[((method, sparsity), rule)]) for rule in ("counted", "left out"))
        low, high = paired_ratio_interval(left, counted)
        print(f"{args.model} chat {method:<8} {sparsity:.0%} KL counted {counted.sum() / tokens_after:.4f}, left out "
              f"{left.sum() / tokens_after:.4f}: {left.sum() / counted.sum() - 1:+.1%} [{low - 1:+.1%}, "
              f"{high - 1:+.1%}]", flush=True)


if __name__ == "__main__":
    main()
