"""What the design-study scripts share: a catalog model in torch, its prior samples, A-GLASS prior ranks and lam;
the options and prompts of the studies on dev-split prompts.

Not part of the package: these scripts rerun EVAL.md's design studies 5 to 10.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from glass_onnx.compiler.compile import CompileOptions, compile_model
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import PriorSettings, compute_samples, global_prior
from glass_onnx.compiler.settings import METHODS, default_lam
from glass_onnx.compiler.sources import load_model, recipe_of
from glass_onnx.evaluation.evaluate import Evaluator
from glass_onnx.evaluation.prompts import load_prompts
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime.manifest import load_manifest


def load_study(model_name: str, threads: int = 1):
    """(torch model, samples' ids, mask, A-GLASS prior ranks [layers, I], the model's lam, manifest, source)."""
    torch.set_num_threads(threads)
    dense, source = dense_artifact(model_name, attention="onnx")
    manifest = load_manifest(dense)
    options = CompileOptions()
    values, _ = global_prior(manifest, source, METHODS["a-glass"], options)
    model, tokenizer = load_model(source)
    settings = PriorSettings("activation", options.prior_samples, options.prior_tokens, 1.0, options.prior_seed,
                             options.prior_text)
    ids, mask = compute_samples(model, tokenizer, settings, bool(manifest["tokenizer"]["instruct"]),
                                source.cache_key())
    return model, ids, mask, ranks(values), default_lam(recipe_of(manifest)), manifest, source


def full_rows(ids, mask, length: int) -> np.ndarray:
    """Indices of the samples with ``length`` real tokens from their start (no EOS before)."""
    return np.flatnonzero(mask[:, :length].all(1).numpy())


def prompt_study_parser(doc: str, per_bucket: int, continuations: bool = True) -> argparse.ArgumentParser:
    """The options every study on dev-split prompts takes (design studies 7 to 10); ``continuations``: it scores
    dense greedy continuations of --gen-len tokens (the Evaluator's, ``study_evaluator``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--per-bucket", type=int, default=per_bucket)
    parser.add_argument("--buckets", default="16,32,chat")
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    if continuations:
        parser.add_argument("--gen-len", type=int, default=128)
    return parser


def dev_prompts(codec, args, chat: bool = True) -> list:
    """The first --per-bucket dev-split prompts of each of --buckets."""
    buckets = args.buckets.split(",")
    return [p for p in load_prompts(codec, "dev", args.per_bucket, chat) if p.bucket in buckets]


def study_evaluator(dense, args, codec, priors: dict, budgets: dict, kind=Evaluator) -> Evaluator:
    """A ``kind`` Evaluator (the template's opening left out of the statistic, as the runtime does) on the reference
    sessions of a GRIFFIN artifact, which overrides turn into each method; the artifact (0.7-1.3 GB) is compiled into
    a temporary folder that lives as long as the evaluator."""
    work = tempfile.TemporaryDirectory()
    artifact = compile_model(str(dense), Path(work.name) / "griffin", CompileOptions(method="griffin", sparsity=0.5))
    evaluator = kind(dense, {("rank", 1): artifact}, priors, args.gen_len, args.threads, None, budgets,
                     codec.template_prefix_length)
    evaluator.workdir = work
    return evaluator
