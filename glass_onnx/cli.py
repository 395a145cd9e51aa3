"""The `glass-onnx` command line. It decides what the user sees: results on stdout; progress, notes and one-line
errors on stderr (``--quiet`` keeps only warnings and errors, ``-v`` adds debug detail)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from glass_onnx.compiler.settings import (
    DEFAULT_FUSION,
    DEFAULT_METHOD,
    DEFAULT_SPARSITY,
    DEFAULT_WARMUP,
    FUSIONS,
    METHODS,
    PRIOR_SAMPLES,
    PRIOR_TOKENS,
)
from glass_onnx.runtime.errors import GlassError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers (got '{text}')") from None


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_export(args) -> None:
    from glass_onnx.compiler.export import export_dense

    out = export_dense(args.model, args.output, force=args.force, attention=args.attention, weights=args.weights)
    logging.getLogger("glass_onnx").info(f"wrote {out}")


def cmd_compile(args) -> None:
    from glass_onnx.compiler.compile import CompileOptions, compile_model

    options = CompileOptions(method=args.method, sparsity=args.sparsity, lam=args.lam, fusion=args.fusion,
                             prior_samples=args.prior_samples, prior_tokens=args.prior_tokens,
                             prior_seed=args.seed, prior_text=args.prior_text, prior_file=args.prior_file,
                             genai=args.genai, attention=args.attention, weights=args.weights, block=args.block,
                             budget=args.budget, warmup=args.warmup)
    compile_model(args.model, args.output, options, force=args.force)


def cmd_generate(args) -> None:
    from glass_onnx.runtime import Generator, SamplingConfig
    from glass_onnx.runtime.manifest import keep_summary

    generator = Generator(args.artifact, provider=args.provider, threads=args.threads, layout=args.layout)
    prompt_ids = generator.encode(_prompt_or_conversation(args), chat=args.chat)
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    stream = None if args.json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    result = generator.generate(prompt_ids, max_new_tokens=args.max_new_tokens, sampling=sampling,
                                stop_strings=tuple(args.stop or ()), on_text=stream, prefill_chunk=args.prefill_chunk,
                                warmup=args.warmup)
    glass = generator.manifest.get("glass")
    if args.json:
        data = result.to_json()
        data["method"] = glass["method"] if glass else "dense"
        if glass:
            data["kept_neurons"] = glass["k"]
            data["intermediate_size"] = glass["intermediate_size"]
        print(json.dumps(data))
        return
    figures = (f"[{result.prompt_tokens} prompt tokens, prefill {result.prefill_ms:.0f} ms, "
               f"{len(result.tokens)} new tokens at {result.decode_tokens_per_s:.1f} tok/s")
    if glass:
        figures += f", {glass['method']} keeps {keep_summary(glass)}"
    print(f"\n{figures}]")


def _prompt_or_conversation(args):
    from glass_onnx.runtime.text import conversation_messages

    if (args.prompt is None) == (args.messages is None):
        raise GlassError("give either a PROMPT or --messages FILE (a conversation), not both or neither")
    if args.messages is None:
        return args.prompt
    if args.chat is False:
        raise GlassError("a conversation goes through the chat template; drop --no-chat")
    try:
        conversation = json.loads(Path(args.messages).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise GlassError(f"could not read the conversation in '{args.messages}' ({e}); pass a JSON file") from None
    return conversation_messages(conversation)


def cmd_eval(args) -> None:
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval

    options = EvalOptions(methods=_names(args.methods), sparsities=_floats(args.sparsity),
                          lams=_floats(args.lams) if args.lams else None, fusions=_names(args.fusions),
                          split=args.split, per_bucket=args.per_bucket, gen_len=args.gen_len,
                          prompts_file=args.prompts, threads=args.threads, prior_samples=args.prior_samples,
                          weights=args.weights, blocks=args.blocks, chat=args.chat, budgets=_names(args.budgets),
                          count_template=args.count_template, warmups=args.warmups)
    run_eval(args.model, Path(args.output), options, force=args.force)


def cmd_bench(args) -> None:
    from glass_onnx.compiler.artifact import cache_dir
    from glass_onnx.tools.bench import BenchOptions, compile_variants, format_table, run_bench

    options = BenchOptions(threads=args.threads, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                           repeats=args.repeats, prefill_lengths=args.prefill_lengths,
                           genai_dir=Path(args.genai) if args.genai else None, measure_rss=not args.no_rss,
                           provider=args.provider)
    # each bench compiles afresh, so its artifacts (0.1-1.3 GB each) are not kept
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=cache_dir()) as work:
        variants = compile_variants(args.model, args.method, list(_floats(args.sparsity)),
                                    list(_names(args.layouts)), Path(work), attention=args.attention,
                                    weights=args.weights, budgets=_names(args.budgets), warmups=args.warmups)
        report = run_bench(variants, options)
    report["model"] = args.model
    print(json.dumps(report, indent=1) if args.json else format_table(report))


def cmd_inspect(args) -> None:
    from glass_onnx.tools.inspect_artifact import describe, open_in_netron

    print(describe(Path(args.artifact)))
    if args.netron:
        open_in_netron(Path(args.artifact), args.graph, args.port)


def cmd_demo(args) -> None:
    from glass_onnx.tools.demo import run_demo

    print(run_demo(args.model, Path(args.output), args.prompt, args.max_new_tokens, args.sparsity, args.threads))


def _weights_option(p, many: bool = False) -> None:
    if many:
        p.add_argument("--weights", type=_names, default=("fp32",),
                       help="weight formats to bench, comma-separated: fp32 (default), int4, or both")
        return
    p.add_argument("--weights", choices=("fp32", "int4"), default="fp32",
                   help="fp32 (default), or int4: 4-bit block-wise weights (MatMulNBits, block 32), quantised by "
                        "ONNX Runtime's own quantiser as onnxruntime-genai's int4 builds are")


def _attention_option(p) -> None:
    p.add_argument("--attention", choices=("ort", "onnx"), default="ort",
                   help="the export's attention (when exporting from a model): ort (default), one ONNX Runtime "
                        "GroupQueryAttention per layer, faster on CPU; onnx, standard opset-23 ops only (other "
                        "runtimes, and the CUDA EP, which has no fp32 GroupQueryAttention)")


def build_parser() -> argparse.ArgumentParser:
    from glass_onnx.models import DEFAULT_MODEL
    from glass_onnx.tools.demo import DEFAULT_PROMPT

    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    loudness.add_argument("-v", "--verbose", action="store_true", help="also debug detail (and the libraries' notes)")
    parser = argparse.ArgumentParser(prog="glass-onnx", description=__doc__ or None)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_):
        return sub.add_parser(name, help=help_, parents=[common])

    p = command("export", "export a model's dense decoder with KV cache to ONNX")
    p.add_argument("model", help="catalog name (smollm2-135m, gemma3-270m), HF directory, .gguf file or hub id")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    _attention_option(p)
    _weights_option(p)
    p.set_defaults(func=cmd_export)

    p = command("compile", "compile a model into GLASS prefill and decode sessions")
    p.add_argument("model", help="catalog name, HF directory, .gguf file, hub id, or a dense export directory")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"one of: {', '.join(METHODS)} (default {DEFAULT_METHOD})")
    p.add_argument("--sparsity", type=float, default=DEFAULT_SPARSITY,
                   help="fraction of FFN neurons dropped, in [0, 1)")
    p.add_argument("--lam", type=float, default=None, help="weight of the prompt's ranking (a-glass, i-glass)")
    p.add_argument("--fusion", default=DEFAULT_FUSION, help=f"{' or '.join(FUSIONS)} (default {DEFAULT_FUSION})")
    p.add_argument("--prior-samples", type=int, default=PRIOR_SAMPLES, help="sequences the model samples for the prior")
    p.add_argument("--prior-tokens", type=int, default=PRIOR_TOKENS, help="tokens per prior sequence")
    p.add_argument("--prior-text", default=None, help="compute the prior on this text file instead of samples")
    p.add_argument("--prior-file", default=None, help="a prior .npz saved by an earlier compile")
    p.add_argument("--seed", type=int, default=0, help="seed for prior sampling and the random method")
    p.add_argument("--genai", action="store_true", help="also write genai_config.json for onnxruntime-genai")
    _attention_option(p)
    _weights_option(p)
    p.add_argument("--block", type=int, default=None,
                   help="neurons per selection candidate: 1 (fp32 default), or for int4 a multiple of 32 (default 32, "
                        "the int4 fast layout's unit); int4 with 1 selects neuron by neuron, reference layout only")
    p.add_argument("--budget", default=None,
                   help="neurons per layer: calibrated (default: chosen from the model's own samples for the same "
                        "total, uniform where they say so: glass_onnx/compiler/budgets.py), uniform (the same k in "
                        "every layer, as the paper), or one count per layer (k_0,k_1,...; whole blocks), which then "
                        "sets the sparsity")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help="the runtime's default number of generated tokens run densely, their activations joining "
                        f"the prompt's statistic, before decode goes sparse (default {DEFAULT_WARMUP}; 0: the paper's "
                        "GLASS; EVAL.md)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_compile)

    p = command("generate", "generate text from an exported or compiled directory")
    p.add_argument("artifact")
    p.add_argument("prompt", nargs="?", default=None, help="the text to answer or continue")
    p.add_argument("--messages", default=None, metavar="FILE",
                   help="instead of PROMPT, a JSON file holding a conversation to answer: a list of {\"role\": ..., "
                        "\"content\": ...} turns, or {\"messages\": [...]}")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    chat = p.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_true", default=None, help="use the chat template")
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="feed the prompt as raw text")
    p.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: all cores)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--prefill-chunk", type=int, default=None,
                   help="prefill the prompt in chunks of this many tokens (at least 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="generated tokens run densely before GLASS chooses its neurons (default: the artifact's)")
    p.add_argument("--layout", default="auto", choices=["auto", "fast", "reference"],
                   help="sessions of a compiled artifact: fast (default) or reference (prefill.onnx + decode.onnx)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_generate)

    p = command("eval", "quality of each method vs dense through the compiled sessions")
    p.add_argument("model", help="catalog name, model path, or a dense export directory")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--sparsity", default="0.25,0.5,0.75", help="comma-separated sparsities")
    p.add_argument("--lams", default=None, help="comma-separated lam values for a-glass/i-glass (default: the model's)")
    p.add_argument("--fusions", default=DEFAULT_FUSION, help=f"{', '.join(FUSIONS)}, or several comma-separated")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--per-bucket", type=int, default=10, help="prompts per length bucket (8, 16, 32, 64, chat)")
    p.add_argument("--gen-len", type=int, default=256, help="tokens of dense greedy continuation (G)")
    p.add_argument("--prompts", default=None,
                   help="prompts instead of the shipped ones: a text file, one per line, or a .jsonl file of JSON "
                        "strings and conversations ({\"messages\": [{\"role\": ..., \"content\": ...}]})")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="prompts through the model's chat template (default: yes for an instruct model); --no-chat "
                        "feeds a --prompts file as plain text and leaves out the shipped chat bucket")
    p.add_argument("--prior-samples", type=int, default=PRIOR_SAMPLES)
    p.add_argument("--threads", type=int, default=None)
    _weights_option(p)
    p.add_argument("--budgets", default="uniform",
                   help="per-layer budgets to compare: uniform, calibrated, or both comma-separated")
    p.add_argument("--count-template", action="store_true",
                   help="GLASS's statistic counts the chat template's opening too (the behaviour before; a control)")
    p.add_argument("--blocks", type=_ints, default=None,
                   help="int4: neurons per selection candidate, comma-separated (default 32; 1 = neuron by neuron)")
    p.add_argument("--warmups", type=_ints, default=(0,),
                   help="generated tokens run densely before the neurons are chosen, comma-separated (default 0)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = command("bench", "dense vs GLASS: decode tok/s, time to first token, prefill, peak RSS")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--sparsity", default="0.5,0.75")
    p.add_argument("--threads", type=_ints, default=(1, 2), help="comma-separated intra-op thread counts")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prefill-lengths", type=_ints, default=(16, 64, 256), help="prompt lengths to time prefill on")
    p.add_argument("--genai", default=None, help="an onnxruntime-genai model folder of the same model, to compare")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--layouts", default="fast", help="session layouts to bench: fast, reference, or both")
    p.add_argument("--budgets", default="uniform", help="per-layer budgets to bench: uniform, calibrated, or both")
    p.add_argument("--warmups", type=_ints, default=None,
                   help="warm-up tokens to bench, comma-separated (default: compile's default)")
    _attention_option(p)
    _weights_option(p, many=True)
    p.set_defaults(func=cmd_bench)

    p = command("inspect", "summarise an artifact: sessions, I/O, ai.glass nodes, weights, prior")
    p.add_argument("artifact")
    p.add_argument("--netron", action="store_true", help="open the graph in Netron on localhost")
    p.add_argument("--graph", default=None, help="which graph file for --netron (default: the prefill graph)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_inspect)

    p = command("demo", "compile the default model with A-GLASS; dense and GLASS side by side")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sparsity", type=float, default=None,
                   help="A-GLASS sparsity (default: the model's recommended one, where text stays close to dense)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", default="out", help="where the compiled artifact goes (default out/)")
    p.set_defaults(func=cmd_demo)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (tests and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(quiet: bool, verbose: bool) -> None:
    """glass-onnx's notes and progress bars on stderr at INFO (WARNING with --quiet, DEBUG with -v); the libraries'
    own notes (transformers, torch's exporter) only with -v."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    ours = logging.getLogger("glass_onnx")
    ours.handlers[:] = [_CurrentStderr()]
    ours.setLevel(level)
    ours.propagate = False
    if not verbose:
        for library in ("onnx_ir", "onnxscript"):  # pass-by-pass notes ("Removed 17 unused nodes")
            logging.getLogger(library).setLevel(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if quiet:  # read when transformers (and tqdm, for its GGUF loader's bar) is first used, after this
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TQDM_DISABLE", "1")


def _glass_error(error: BaseException | None) -> GlassError | None:
    """The GlassError that ``error`` is or was raised from, if any."""
    while error is not None and not isinstance(error, GlassError):
        error = error.__cause__
    return error


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    try:
        args.func(args)
    except Exception as e:  # onnx_ir's PassManager wraps what a pass raises in PassError
        error = _glass_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
