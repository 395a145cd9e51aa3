"""`glass-onnx eval`: quality of each method against dense, through the compiled ONNX sessions.

Per prompt: the dense model's greedy continuation of G tokens is the reference. Each (method, sparsity, lam,
fusion) chooses neurons from the prompt alone (prefill), then the reference continuation is teacher-forced through
the sparse decode session in one multi-token call. Reported: perplexity of the reference continuation, mean
per-token KL(dense || sparse), top-1 agreement with dense, and per-layer Jaccard overlap of the kept set with the
oracle set (top-k of the local statistic over prompt + continuation). One compiled artifact per fusion serves every
method and sparsity: the prior ranks, lam and k are overridable prefill inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from glass_onnx.compiler.budgets import BUDGETS
from glass_onnx.compiler.settings import (
    DEFAULT_FUSION,
    INT4_BLOCK,
    METHODS,
    PRIOR_SAMPLES,
    check_fusion,
    check_lam,
    check_sparsity,
    get_method,
    keep_count,
)
from glass_onnx.evaluation.metrics import jaccard, summarise, token_metrics
from glass_onnx.passes.glass_math import block_prior_rank
from glass_onnx.runtime.decoder import Decoder, check_threads
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import KEEP, LAM, PRIOR_FILE, PRIOR_RANK

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalOptions:
    methods: tuple[str, ...] = tuple(METHODS)
    sparsities: tuple[float, ...] = (0.25, 0.5, 0.75)
    lams: tuple[float, ...] | None = None  # a-glass/i-glass; None: the model's default
    fusions: tuple[str, ...] = (DEFAULT_FUSION,)
    split: str = "test"  # "dev" or "test"
    per_bucket: int = 10  # prompts per length bucket (and chat)
    gen_len: int = 256  # tokens of dense greedy continuation (G)
    prompts_file: str | None = None  # one prompt per line, instead of the shipped prose
    chat: bool | None = None  # prompts through the chat template; None: as the model is (instruct or not)
    threads: int | None = None
    prior_samples: int = PRIOR_SAMPLES
    weights: str = "fp32"  # int4: the sparse models and a second reference, the int4 dense model
    blocks: tuple[int, ...] | None = None  # neurons per selection candidate; None: 1 for fp32, 32 for int4
    budgets: tuple[str, ...] = ("uniform",)  # per-layer budgets (compiler/budgets.py): uniform and/or calibrated
    count_template: bool = False  # GLASS's statistic counts the chat template's opening too (as before; a control)
    warmups: tuple[int, ...] = (0,)  # generated tokens run densely before the kept neurons are chosen (Decoder)

    def __post_init__(self):
        from glass_onnx.compiler.export import check_forms

        check_forms("onnx", self.weights)
        if self.blocks is None:
            self.blocks = (INT4_BLOCK,) if self.weights == "int4" else (1,)
        if any(b != 1 for b in self.blocks) and self.weights == "fp32":
            raise GlassError("--blocks other than 1 apply to --weights int4")
        for name in self.methods:
            get_method(name)
        for s in self.sparsities:
            check_sparsity(s)
        for lam in self.lams or ():
            check_lam(lam)
        for fusion in self.fusions:
            check_fusion(fusion)
        check_threads(self.threads)
        if bad := [b for b in self.budgets if b not in BUDGETS]:
            raise GlassError(f"unknown budget '{bad[0]}'; choose from: {', '.join(BUDGETS)}")
        if bad := [w for w in self.warmups if w < 0 or w >= self.gen_len]:
            raise GlassError(f"--warmups {bad[0]} is not between 0 and --gen-len - 1 ({self.gen_len - 1})")
        if self.split not in ("dev", "test"):
            raise GlassError(f"unknown split '{self.split}'; choose dev or test")


@dataclasses.dataclass(frozen=True)
class Config:
    method: str
    sparsity: float
    lam: float
    fusion: str = "rank"
    block: int = 1
    budget: str = "uniform"
    warmup: int = 0

    @property
    def label(self) -> str:
        return f"{self.method} s={self.sparsity:g} lam={self.lam:g} {self.fusion}" + \
            (f" blocks of {self.block}" if self.block > 1 else "") + \
            (f" {self.budget} budget" if self.budget != "uniform" else "") + \
            (f" warm-up {self.warmup}" if self.warmup else "")


def configs(methods, sparsities, lams, fusions, default_lam, blocks=(1,), budgets=("uniform",),
            warmups=(0,)) -> list[Config]:
    out = []
    for name in methods:
        method = get_method(name)
        if method.name == "dense":
            out.append(Config("dense", 0.0, 1.0, block=blocks[0]))
            continue
        for s in sparsities:
            for b in blocks:
                for budget in budgets:
                    if method.lam is not None:
                        out += [Config(name, s, method.lam, block=b, budget=budget, warmup=w) for w in warmups]
                    else:
                        out += [Config(name, s, lam, f, b, budget, w) for lam in (lams or [default_lam])
                                for f in fusions for w in warmups]
    return out


def _pad_left(seqs: list[tuple[int, ...]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), pad, np.int64)
    mask = np.zeros((len(seqs), n), np.int64)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):], mask[i, n - len(s):] = s, 1
    return ids, mask


class Evaluator:
    """Runs the grid over prompts in small left-padded batches, on the reference sessions of one compiled artifact per
    (fusion, block); with ``int4_dense_dir`` every configuration is also compared with the int4 dense model."""

    def __init__(self, dense_dir: Path, artifacts: dict[tuple[str, int], Path], priors: dict[str, np.ndarray],
                 gen_len: int, threads: int | None = None, int4_dense_dir: Path | None = None,
                 budgets: dict | None = None, template_opening=None):
        self.dense = Decoder(dense_dir, threads=threads)
        self.int4_dense = Decoder(int4_dense_dir, threads=threads) if int4_dense_dir else None
        self.sparse = {key: Decoder(path, threads=threads) for key, path in artifacts.items()}
        # an int4 artifact orders its neurons by a prior (passes/permute_neurons.py): ids are in that order
        self.orders = {key: np.load(path / PRIOR_FILE)["order"] for key, path in artifacts.items()}
        self.priors = priors  # method prior name -> ranks [layers, I]
        self.budgets = budgets or {}  # (sparsity, block) -> calibrated k per layer
        self.template_opening = template_opening  # ids -> the chat template's opening length (TextCodec); None: 0
        self.gen_len = gen_len
        model = self.dense.model
        self.size, self.layers = model["intermediate_size"], model["num_layers"]
        self.eos = set(self.dense.manifest["tokenizer"].get("eos_token_ids") or [])
        self.pad = next(iter(self.eos), 0)
        vocab = model["vocab_size"]
        # keep a batch's logits under ~400 MB
        self.batch = max(1, min(8, int(4e8 // (4 * (gen_len + 80) * vocab))))

    # -- reference ----------------------------------------------------------------------------------------
    def continuation(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        """Greedy dense continuations [batch, G] and their mask (1 up to and including EOS)."""
        ids, mask = _pad_left([p.ids for p in prompts], self.pad)
        state = self.dense.new_state(len(prompts))
        logits = self.dense.prefill(state, ids, mask)
        # positions after every row's EOS stay padding and do not count (the loop stops there)
        tokens = np.full((len(prompts), self.gen_len), self.pad, np.int64)
        live = np.zeros((len(prompts), self.gen_len), np.int64)
        done = np.zeros(len(prompts), bool)
        for t in range(self.gen_len):
            nxt = logits[:, -1].argmax(-1)
            nxt = np.where(done, self.pad, nxt)
            tokens[:, t], live[:, t] = nxt, ~done
            done |= np.isin(nxt, list(self.eos))
            if done.all() or t == self.gen_len - 1:
                break
            logits = self.dense.decode(state, nxt[:, None])
        return tokens, live

    def opening(self, prompts, decoder) -> int:
        """The chat template's opening all these prompts share (0 if they do not, or ``decoder`` is dense), which
        GLASS's statistic leaves out as Generator.generate does: prefilled first, then the statistic restarts."""
        if self.template_opening is None or not decoder.glass:
            return 0
        lengths = {self.template_opening(list(p.ids)) for p in prompts}  # each shorter than its prompt
        return lengths.pop() if len(lengths) == 1 else 0

    def prompt_batch(self, prompts, opening: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask) [batch, n] of the prompts: their shared ``opening`` tokens first, then the rest
        left-padded (the attention mask and positions skip the padding)."""
        rest, mask = _pad_left([p.ids[opening:] for p in prompts], self.pad)
        shared = np.array([p.ids[:opening] for p in prompts], np.int64).reshape(len(prompts), opening)
        return (np.concatenate([shared, rest], 1),
                np.concatenate([np.ones((len(prompts), opening), mask.dtype), mask], 1))

    def teacher_forced(self, decoder, prompts, tokens, overrides=None, warmup: int = 0):
        """(logits [batch, G - 1, vocab], kept neurons) of ``decoder`` fed the prompts and then ``tokens`` (the dense
        continuation), with ``overrides`` at prefill and the first ``warmup`` tokens run densely, as generate does."""
        state = decoder.new_state(len(prompts))
        opening = self.opening(prompts, decoder)
        ids, mask = self.prompt_batch(prompts, opening)
        decoder.prefill_prompt(state, ids, mask, overrides, uncounted=opening, warmup=warmup)
        # right padding after EOS needs no mask: causal attention never looks ahead
        logits = decoder.decode(state, tokens[:, :-1])  # its first ``warmup`` tokens through prefill
        return logits, decoder.kept_neurons(state)

    def keep(self, config: Config) -> int:
        return keep_count(config.sparsity, self.size, config.block)

    def layer_keep(self, config: Config) -> tuple[int, ...]:
        """k per layer: the calibrated budget's, or the uniform k in every layer."""
        if config.budget == "calibrated":
            return tuple(self.budgets[(config.sparsity, config.block)])
        return (self.keep(config),) * self.layers

    def artifact(self, config: Config) -> Decoder:
        return self.sparse[(config.fusion, config.block)]

    def overrides(self, config: Config) -> dict:
        """The prefill inputs that turn the artifact of the config's fusion and block into this configuration: the
        method's prior ranks in the artifact's neuron order (of its blocks, for blocks), lam and k."""
        method = get_method(config.method)
        prior = self.priors[method.prior] if method.prior else np.zeros((self.layers, self.size), np.float32)
        prior = np.take_along_axis(prior, self.orders[(config.fusion, config.block)], axis=1)
        if config.block > 1:
            prior = block_prior_rank(prior, config.block)
        return {PRIOR_RANK: prior, LAM: np.array(config.lam, np.float32),
                KEEP: np.array(self.layer_keep(config), np.int64)}

    # -- one batch ----------------------------------------------------------------------------------------
    def run_batch(self, prompts, grid: list[Config]) -> dict:
        """{config: per-prompt metrics}; with warm-ups in the grid, also over the targets after the longest one
        (``*_after``), where every configuration decodes sparse: the selection's effect apart from the warm-up's
        exact tokens."""
        tokens, live = self.continuation(prompts)
        dense_logits, _ = self.teacher_forced(self.dense, prompts, tokens)
        int4_logits = self.teacher_forced(self.int4_dense, prompts, tokens)[0] if self.int4_dense else None
        targets, target_mask = tokens[:, 1:], live[:, 1:]
        results = {}
        oracle = {}
        longest_warmup = max(c.warmup for c in grid)
        for config in grid:
            k = self.layer_keep(config)
            logits, kept = self.teacher_forced(self.artifact(config), prompts, tokens, self.overrides(config),
                                                config.warmup)
            if (k, config.block) not in oracle:
                oracle[(k, config.block)] = self.oracle_sets(prompts, tokens, live, k, config.block)
            per_prompt = []
            for i in range(len(prompts)):
                m = token_metrics(dense_logits[i], logits[i], targets[i], target_mask[i])
                if int4_logits is not None:  # against the int4 dense model: what int4 sparsity itself costs
                    vs_int4 = token_metrics(int4_logits[i], logits[i], targets[i], target_mask[i])
                    m.update(kl_int4=vs_int4["kl"], top1_int4=vs_int4["top1"])
                if longest_warmup:
                    after = target_mask[i] * (np.arange(target_mask.shape[1]) >= longest_warmup)
                    late = token_metrics(dense_logits[i], logits[i], targets[i], after)
                    m.update(kl_after=late["kl"], top1_after=late["top1"], tokens_after=late["tokens"])
                m["jaccard"] = [jaccard(kept[layer][i], oracle[(k, config.block)][layer][i])
                                for layer in range(len(kept))]
                per_prompt.append(m)
            results[config] = per_prompt
        return results

    def oracle_sets(self, prompts, tokens, live, k: tuple[int, ...], block: int = 1):
        """Top-k (per layer) of the local statistic over prompt + continuation (GRIFFIN with hindsight), in the
        artifact's neuron order and blocks."""
        seqs = [tuple(p.ids) + tuple(tokens[i][live[i].astype(bool)]) for i, p in enumerate(prompts)]
        ids, mask = _pad_left(seqs, self.pad)
        griffin = Config("griffin", 0.5, 1.0, "rank" if ("rank", block) in self.sparse else
                         next(f for f, b in self.sparse if b == block), block)
        decoder = self.artifact(griffin)
        state = decoder.new_state(len(prompts))
        decoder.prefill(state, ids, mask, overrides={**self.overrides(griffin), KEEP: np.array(k, np.int64)})
        return decoder.kept_neurons(state)


def aggregate(per_prompt: list[dict]) -> dict:
    int4 = ("kl_int4", "top1_int4") if "kl_int4" in per_prompt[0] else ()
    after = ("kl_after", "top1_after", "tokens_after") if "kl_after" in per_prompt[0] else ()
    keys = ("nll", "kl", "top1", "tokens", "dense_nll", *int4, *after)
    totals = {key: sum(m[key] for m in per_prompt) for key in keys}
    out = summarise(totals)
    out["jaccard_by_layer"] = np.mean([m["jaccard"] for m in per_prompt], axis=0).round(4).tolist()
    out["jaccard"] = float(np.mean(out["jaccard_by_layer"]))
    out["prompts"] = len(per_prompt)
    out["prompt_kl"] = [round(m["kl"], 5) for m in per_prompt]  # each prompt's KL sum: paired intervals (report)
    return out


def run_eval(model: str, output: Path, options: EvalOptions, force: bool = False) -> dict:
    """`glass-onnx eval`: the grid of ``options`` on ``model``, written to ``output`` (results.json, results.md,
    plots)."""
    from glass_onnx.compiler.artifact import atomic_directory, refuse_existing
    from glass_onnx.compiler.compile import CompileOptions, calibrated_layer_budgets, compile_model
    from glass_onnx.compiler.export import dense_artifact
    from glass_onnx.compiler.priors import global_prior
    from glass_onnx.compiler.settings import default_lam
    from glass_onnx.compiler.sources import recipe_of
    from glass_onnx.evaluation.prompts import file_prompts, load_prompts
    from glass_onnx.evaluation.report import write_report
    from glass_onnx.passes.glass_math import ranks
    from glass_onnx.progress import progress
    from glass_onnx.runtime.manifest import load_manifest
    from glass_onnx.runtime.text import TextCodec

    refuse_existing(output, force)
    started = time.perf_counter()
    # teacher forcing runs batches of multi-token steps: the standard attention ops take them, GroupQueryAttention not
    dense, source = dense_artifact(model, attention="onnx")
    manifest = load_manifest(dense)
    grid = configs(options.methods, options.sparsities, options.lams, options.fusions, default_lam(recipe_of(manifest)),
                   options.blocks, options.budgets, options.warmups)
    codec = TextCodec(dense, manifest["tokenizer"])
    instruct = bool(manifest["tokenizer"]["instruct"])
    if options.chat and not instruct:
        raise GlassError(f"{model} has no chat template; drop --chat (its prompts are plain text)")
    chat = instruct if options.chat is None else options.chat
    prompts = file_prompts(codec, options.prompts_file, chat) if options.prompts_file else \
        load_prompts(codec, options.split, options.per_bucket, chat)
    if not prompts:
        raise GlassError("no prompts to evaluate; check --prompts or --per-bucket")
    too_long = [p for p in prompts if len(p.ids) + options.gen_len > manifest["model"]["max_context"]]
    if too_long:
        raise GlassError(f"{len(too_long)} prompt(s) + --gen-len exceed the model's context; shorten them")

    with atomic_directory(output, force=force) as tmp:
        priors = {}
        # one method per prior kind, so each prior is computed (or read from the cache) as compile does it
        methods = [get_method(c.method) for c in grid]
        for method in {m.prior: m for m in methods if m.prior}.values():
            values, _ = global_prior(manifest, source, method, CompileOptions(prior_samples=options.prior_samples))
            priors[method.prior] = ranks(values)
        artifacts = {}
        for fusion, block in sorted({(c.fusion, c.block) for c in grid} | {(DEFAULT_FUSION, options.blocks[0])}):
            artifacts[(fusion, block)] = compile_model(
                str(dense), tmp / "artifacts" / f"{fusion}-{block}",
                CompileOptions(method="griffin", sparsity=0.5, fusion=fusion, weights=options.weights, block=block))
        int4_dense = dense_artifact(model, attention="onnx", weights="int4")[0] if options.weights == "int4" else None
        budgets, chosen = {}, {}  # the calibrated budgets, as compile --budget calibrated chooses them
        for sparsity, block in sorted({(c.sparsity, c.block) for c in grid if c.budget == "calibrated"}):
            k = keep_count(sparsity, manifest["model"]["intermediate_size"], block)
            budgets[(sparsity, block)], chosen[(sparsity, block)] = calibrated_layer_budgets(
                manifest, source, CompileOptions(prior_samples=options.prior_samples, block=block), k)
        evaluator = Evaluator(dense, artifacts, priors, options.gen_len, options.threads, int4_dense, budgets,
                              None if options.count_template else codec.template_prefix_length)
        per_config: dict[Config, list] = {c: [] for c in grid}
        by_bucket: dict[tuple, list] = {}
        # batches of one bucket and one length of the template's opening, which a batch leaves out of the
        # statistic together (Evaluator.opening); conversations with system turns of their own vary it
        groups: dict[tuple, list] = {}
        for p in prompts:
            groups.setdefault((p.bucket, codec.template_prefix_length(list(p.ids))), []).append(p)
        prompts = [p for group in groups.values() for p in group]
        batches = [group[i : i + evaluator.batch] for group in groups.values()
                   for i in range(0, len(group), evaluator.batch)]
        for batch in progress(batches, desc=f"eval {len(prompts)} prompts x {len(grid)} configs", unit="batch"):
            for config, rows in evaluator.run_batch(batch, grid).items():
                per_config[config] += rows
                for prompt, row in zip(batch, rows):
                    by_bucket.setdefault((config, prompt.bucket), []).append(row)
        samples_md = free_running_samples(evaluator, codec, prompts, grid)
        shutil.rmtree(tmp / "artifacts")
        result = {
            "model": manifest["model"]["name"], "split": None if options.prompts_file else options.split,
            "prompts_file": options.prompts_file, "gen_len": options.gen_len,
            "weights": options.weights,
            "prompts": [{"bucket": p.bucket, "text": p.text, "tokens": len(p.ids), "source": p.source}
                        for p in prompts],
            "results": [{**dataclasses.asdict(c), **aggregate(rows)} for c, rows in per_config.items()],
            "by_bucket": [{**dataclasses.asdict(c), "bucket": b, **aggregate(rows)}
                          for (c, b), rows in by_bucket.items()],
            "calibrated_budgets": [{"sparsity": s, "block": b, "k_per_layer": k, "chosen": chosen[(s, b)]["chosen"],
                                    "sample_kl": chosen[(s, b)]["sample_kl"]} for (s, b), k in budgets.items()],
            "intermediate_size": manifest["model"]["intermediate_size"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / "results.json").write_text(json.dumps(result, indent=1))
        write_report(result, tmp, samples_md)
    log.info(f"wrote {output} in {time.perf_counter() - started:.0f} s")
    return result


def free_running_samples(evaluator: Evaluator, codec, prompts, grid, n_prompts: int = 3, tokens: int = 48) -> str:
    """Greedy free-running generations for a few prompts, one per method at the most common sparsity."""
    sparsities = sorted({c.sparsity for c in grid if c.method != "dense"})
    sparsity = 0.5 if 0.5 in sparsities else (sparsities[len(sparsities) // 2] if sparsities else None)
    shown = [c for c in grid if c.method == "dense" or c.sparsity == sparsity]
    picks = [p for p in prompts if p.bucket in ("16", "chat", "file", "file-chat")][:n_prompts] or prompts[:n_prompts]
    lines = []
    for p in picks:
        lines.append(f"### Prompt ({p.bucket}): {p.text}\n")
        lines.append("| method | continuation |\n|---|---|")
        for config in shown:
            if config.method == "dense":
                decoder, overrides = evaluator.dense, None
            else:
                decoder, overrides = evaluator.artifact(config), evaluator.overrides(config)
            state = decoder.new_state()
            opening = evaluator.opening([p], decoder)
            logits = decoder.prefill_prompt(state, np.array([p.ids]), None, overrides, uncounted=opening,
                                            warmup=config.warmup)
            out = []
            for _ in range(tokens):
                t = int(logits[0, -1].argmax())
                if t in evaluator.eos:
                    break
                out.append(t)
                logits = decoder.decode(state, np.array([[t]]))
            text = codec.decode(out).replace("\n", " ").replace("|", "\\|")
            lines.append(f"| {config.label} | {text} |")
        lines.append("")
    return "\n".join(lines)
