"""Design study 9 (EVAL.md): how much can any per-layer allocation cut A-GLASS's KL on real prompts?

    python scripts/budget_ceiling_study.py smollm2-135m --sparsity 0.5 --per-bucket 12 --threads 2

The calibrated budgets cut A-GLASS's KL by 16-21% at 50% on the test split, against the issue's 25%. This study
asks whether the target is within reach of per-layer counts at all, by searching them on the evaluation prompts
themselves (the dev split, never shipped: the product chooses from the model's own samples). The prompts of each
bucket are split in two halves, A and B. Each sequence is a prompt and its dense greedy continuation in torch; as in
``eval --warmups W``, the statistic reads the prompt (the chat template's opening left out) and the first W generated
tokens, which run densely, and the tokens after them are scored with every layer sparse. Study 5's search (its
gradient moves of 32-neuron steps, scripts/budget_search_study.py) then fits the counts on half A, from uniform and
from the calibrated counts; each result is scored on A (in-sample: the ceiling) and on B (the other prompts). The
same search on the model's own samples (study 5's objective, on more of them, from the calibrated counts) asks
whether they can find what A finds: it is scored on A and B too.
"""

import time

import torch
from budget_search_study import JointKL, fused_orders, search
from study_setup import dev_prompts, full_rows, load_study, prompt_study_parser

from glass_onnx.compiler import budget_calibration as calibration
from glass_onnx.compiler.budget_calibration import SparsifiedModel, calibrated_budgets
from glass_onnx.compiler.compile import CompileOptions
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.evaluation.evaluate import keep_count
from glass_onnx.passes.glass_math import local_statistic
from glass_onnx.runtime.text import TextCodec

MINI_BATCH = 6


class PromptKL(JointKL):
    """Joint KL of a set of prompts for per-layer counts, and its gradient per layer keep mask [rows, I]: JointKL on
    prompts of different lengths (right-padded) instead of the samples."""

    def __init__(self, model, rows, prior_rank, lam, warmup):
        self.model, self.layers = model, model.model.layers
        width = max(len(r["ids"]) for r in rows)
        self.x = torch.tensor([r["ids"] + [0] * (width - len(r["ids"])) for r in rows])
        self.mask = torch.tensor([[1] * len(r["ids"]) + [0] * (width - len(r["ids"])) for r in rows])
        positions = torch.arange(width)[None]
        # a position is sparse once its input is the token after the warm-up; it is scored up to the last target
        start = torch.tensor([r["prompt"] + warmup for r in rows])[:, None]
        self.sparse = (positions >= start).float()
        self.scored = (positions >= start) & (positions < torch.tensor([len(r["ids"]) - 1 for r in rows])[:, None])
        self.windows = [(r["opening"], r["prompt"] + warmup) for r in rows]  # the statistic's tokens
        self.keep = None
        self.record = [[None] * len(rows) for _ in self.layers]
        with torch.no_grad():
            self.dense = [self._logp(b) for b in self._batches()]
        windows, self.record = self.record, None
        self.orders = fused_orders([[local_statistic(z) for z in layer_z] for layer_z in windows], prior_rank, lam)

    def _batches(self):
        return [slice(i, min(i + MINI_BATCH, len(self.x))) for i in range(0, len(self.x), MINI_BATCH)]

    def _hook(self, args, layer):
        z = args[0]
        if self.record is not None:
            for i, row in enumerate(range(self._rows.start, self._rows.stop)):
                begin, end = self.windows[row]
                self.record[layer][row] = z[i, begin:end].double().numpy()
        if self.keep is None:
            return None
        keep = self.keep[layer][self._rows][:, None, :]
        sparse = self.sparse[self._rows][:, :, None]
        return (z * (1 - sparse + sparse * keep),)

    def _logp(self, rows: slice):
        self._rows = rows
        hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda _m, args, i=i: self._hook(args, i))
                 for i, layer in enumerate(self.layers)]
        try:
            hidden = self.model.model(input_ids=self.x[rows], attention_mask=self.mask[rows]).last_hidden_state
        finally:
            for h in hooks:
                h.remove()
        return torch.log_softmax(self.model.lm_head(hidden[self.scored[rows]]).double(), -1)

    def _kl(self, masks, backward: bool) -> float:
        self.keep, total = masks, 0.0
        try:
            for rows, dense in zip(self._batches(), self.dense):
                sparse = self._logp(rows)
                kl = (dense.exp() * (dense - sparse)).sum(-1).clamp_min(0).sum() / int(self.scored.sum())
                if backward:
                    kl.backward()
                total += float(kl.detach())
        finally:
            self.keep = None
        return total

    def __call__(self, budgets):
        masks = [m.requires_grad_() for m in self.masks(budgets)]
        return self._kl(masks, backward=True), [m.grad.numpy() for m in masks]

    def score(self, budgets) -> float:
        with torch.no_grad():
            return self._kl(self.masks(budgets), backward=False)


def main() -> None:
    parser = prompt_study_parser(__doc__, per_bucket=12, continuations=False)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--scored", type=int, default=64, help="tokens scored after the warm-up")
    parser.add_argument("--searches", default="prompts,samples",
                        help="prompts: search on half A; samples: search on the model's own samples (study 5's "
                             "objective, on --samples of them), both scored on A and B")
    parser.add_argument("--samples", type=int, default=24)
    args = parser.parse_args()
    model, ids, mask, prior_rank, lam, manifest, source = load_study(args.model, args.threads)
    dense_dir, _ = dense_artifact(args.model, attention="onnx")
    codec = TextCodec(dense_dir, manifest["tokenizer"])
    buckets = args.buckets.split(",")
    prompts = dev_prompts(codec, args)
    started = time.perf_counter()
    eos = set(manifest["tokenizer"].get("eos_token_ids") or [])
    rows = []
    with torch.no_grad():
        for p in prompts:
            prompt = torch.tensor([list(p.ids)])
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=args.warmup + args.scored, pad_token_id=0)[0, len(p.ids):].tolist()
            end = next((i + 1 for i, t in enumerate(out) if t in eos), len(out))
            rows.append({"ids": list(p.ids) + out[:end], "prompt": len(p.ids), "bucket": p.bucket,
                         "opening": codec.template_prefix_length(list(p.ids)) if p.bucket == "chat" else 0})
    rows = [r for r in rows if len(r["ids"]) > r["prompt"] + args.warmup + 1]  # something left to score
    halves = {h: [r for b in buckets for r in [r for r in rows if r["bucket"] == b][h::2]] for h in (0, 1)}
    print(f"{len(rows)} prompts with tokens after the warm-up, continuations in {time.perf_counter() - started:.0f}"
          f" s; halves of {len(halves[0])} and {len(halves[1])}", flush=True)
    layers, size = prior_rank.shape
    k = keep_count(args.sparsity, size, 1)
    calibrated, record = calibrated_budgets(manifest, source, CompileOptions(), prior_rank, lam, k)
    probes = {h: PromptKL(model, halves[h], prior_rank, lam, args.warmup) for h in (0, 1)}
    found = {"uniform": [k] * layers, f"calibrated ({record['chosen']})": list(calibrated)}
    starts = list(found.items())
    if "prompts" in args.searches:
        for name, start in starts:
            found[f"searched on A from {name.split()[0]}"] = search(probes[0], start, size, f"from {name}")
    if "samples" in args.searches:
        length = calibration.PROMPT_TOKENS + calibration.SCORED_TOKENS
        x = ids[full_rows(ids, mask, length)][: args.samples, :length]
        with SparsifiedModel(model) as probe:
            joint = JointKL(probe, x, prior_rank, lam)
            for name, start in starts[1:]:  # from uniform, study 5's search was still falling after 20 rounds
                found[f"searched on {len(x)} samples from {name.split()[0]}"] = search(
                    joint, start, size, f"samples, from {name}")
    uniform = {h: probes[h].score(found["uniform"]) for h in (0, 1)}
    for name, budgets in found.items():
        a, b = probes[0].score(budgets), probes[1].score(budgets)
        print(f"{args.model} {args.sparsity:.0%} {name:<44} A (searched on) {a:.4f} ({a / uniform[0] - 1:+.1%} vs "
              f"uniform)   B (the other prompts) {b:.4f} ({b / uniform[1] - 1:+.1%})\n    {budgets}", flush=True)


if __name__ == "__main__":
    main()
