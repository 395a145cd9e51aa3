"""Design study 9b (EVAL.md): could each prompt choose its own counts among the calibration's candidates?

    python scripts/candidate_oracle_study.py smollm2-135m --per-bucket 12 --threads 2

Study 9 bounds fixed counts. This bounds counts chosen per prompt among the calibrated budget's candidates (uniform,
the protected layers, and those with OWL at 0.1 / 0.2 / 0.3: `compiler/budgets.py`), with hindsight: each prompt
takes the candidate of least KL on its own scored tokens, which no runtime can know. If even that misses the 25%
cut at 50%, no rule that picks among them per prompt (by the warm-up, say) can reach it.

A-GLASS at the model's lam, 50%, the 32-token warm-up, dev split, through the compiled sessions (the Evaluator's);
KL on the dense greedy continuation's tokens after the warm-up, per bucket and in all, against uniform counts.
"""

import time

import numpy as np
from study_setup import dev_prompts, prompt_study_parser, study_evaluator

from glass_onnx.compiler.budgets import LayerProfile, candidate_budgets
from glass_onnx.compiler.compile import CompileOptions, calibrated_layer_budgets
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import global_prior
from glass_onnx.compiler.settings import METHODS, default_lam
from glass_onnx.compiler.sources import recipe_of
from glass_onnx.evaluation.evaluate import Config, keep_count
from glass_onnx.evaluation.metrics import token_metrics
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.protocol import KEEP
from glass_onnx.runtime.text import TextCodec

SPARSITY = 0.5


def main() -> None:
    parser = prompt_study_parser(__doc__, 12)
    args = parser.parse_args()
    dense, source = dense_artifact(args.model, attention="onnx")
    manifest = load_manifest(dense)
    codec = TextCodec(dense, manifest["tokenizer"])
    prompts = dev_prompts(codec, args, bool(manifest["tokenizer"]["instruct"]))
    size, options = manifest["model"]["intermediate_size"], CompileOptions()
    k = keep_count(SPARSITY, size)
    chosen, record = calibrated_layer_budgets(manifest, source, options, k)
    profile = LayerProfile(np.array(record["outlier_ratio"]), np.array(record["sensitivity"]))
    candidates = candidate_budgets(profile, k, size)
    assert candidates[record["chosen"]] == chosen, "the record's rounded profile gives other candidates"
    prior = ranks(global_prior(manifest, source, METHODS["a-glass"], options)[0])
    evaluator = study_evaluator(dense, args, codec, {"activation": prior}, {})
    config = Config("a-glass", SPARSITY, default_lam(recipe_of(manifest)), warmup=args.warmup)
    rows, started = [], time.perf_counter()  # (bucket, {candidate: KL summed over the prompt's scored tokens})
    for i in range(0, len(prompts), evaluator.batch):
        batch = prompts[i : i + evaluator.batch]
        tokens, live = evaluator.continuation(batch)
        dense_logits, _ = evaluator.teacher_forced(evaluator.dense, batch, tokens)
        after = live[:, 1:] * (np.arange(args.gen_len - 1) >= args.warmup)
        kl = {}
        for name, counts in candidates.items():
            overrides = {**evaluator.overrides(config), KEEP: np.array(counts, np.int64)}
            logits, _ = evaluator.teacher_forced(evaluator.artifact(config), batch, tokens, overrides, args.warmup)
            kl[name] = [token_metrics(dense_logits[r], logits[r], tokens[r, 1:], after[r])["kl"]
                        for r in range(len(batch))]
        rows += [(p.bucket, {name: kl[name][r] for name in candidates}) for r, p in enumerate(batch)]
        print(f"{i + len(batch)}/{len(prompts)} prompts, {time.perf_counter() - started:.0f} s", flush=True)
    print(f"calibrated choice: {record['chosen']}")
    for bucket in [*dict.fromkeys(b for b, _ in rows), "all"]:
        chosen_rows = [kl for b, kl in rows if bucket in ("all", b)]
        total = {name: sum(kl[name] for kl in chosen_rows) for name in candidates}
        oracle = sum(min(kl.values()) for kl in chosen_rows)
        changes = ", ".join(f"{name} {total[name] / total['uniform'] - 1:+.1%}" for name in candidates)
        print(f"{args.model} {bucket:>5} ({len(chosen_rows)} prompts) vs uniform: {changes}; per-prompt oracle "
              f"{oracle / total['uniform'] - 1:+.1%}", flush=True)


if __name__ == "__main__":
    main()
