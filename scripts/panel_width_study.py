"""Design study: the gate/up panel width of the fp32 fast layout (BENCHMARKS.md, "Panel width").

Two measurements on this host, 1 thread unless --threads:
- ``matmul``: the one-token gate/up matmul of 30 layers alone, [1, H] x W for 2k columns, with W a constant (ORT
  prepacks it: the dense model's case), a plain [H, 2k] input, panels [2k / w, H, w] for several w, and W^T [2k, H]
  (Gemm transB); interleaved medians of ms per 30 layers;
- ``decode``: decode tok/s of the dense export and of a compiled artifact with each width fixed and with the
  runtime's trial (runtime/panel_trial.py), interleaved rounds, and whether every width gave the same tokens;
- ``profile``: ONNX Runtime's profile of 200 decode steps, dense and each width at the first sparsity: ms per step
  of the MatMuls by output shape (gate/up, down, the rest).

    python scripts/panel_width_study.py smollm2-135m --sparsity 0.25,0.5 --what matmul,decode,profile
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def matmul_times(hidden: int, ks: list[int], layers: int, rounds: int, threads: int) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def session(kind: str, n: int, w: int = 0):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])
        nodes, inputs, inits, feeds, outs = [], [x], [numpy_helper.from_array(np.array([1], np.int64), "axis")], {}, []
        nodes.append(helper.make_node("Unsqueeze", ["x", "axis"], ["x4"]))
        for layer in range(layers):
            weights, name = rng.standard_normal((hidden, n), dtype=np.float32), f"w{layer}"
            if kind == "constant":
                inits.append(numpy_helper.from_array(weights, name))
            else:
                if kind == "panels":
                    weights = weights.reshape(hidden, n // w, w).transpose(1, 0, 2)
                feeds[name] = np.ascontiguousarray(weights.T if kind == "transposed" else weights)
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, feeds[name].shape))
            if kind == "transposed":
                nodes.append(helper.make_node("Gemm", ["x", name], [f"y{layer}"], transB=1))
            else:
                nodes.append(helper.make_node("MatMul", ["x4" if kind == "panels" else "x", name], [f"y{layer}"]))
            outs.append(f"y{layer}")
        nodes.append(helper.make_node("Concat", outs, ["y"], axis=-1))
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, "gate_up", inputs, [output], inits)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = threads, 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        feeds["x"] = rng.standard_normal((1, hidden), dtype=np.float32)
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), feeds

    variants = {}
    for k in ks:
        variants[(k, "constant")] = session("constant", 2 * k)
        variants[(k, "plain [H, 2k]")] = session("plain", 2 * k)
        variants[(k, "W^T [2k, H], Gemm transB")] = session("transposed", 2 * k)
        for w in (16, 32, 64, 128, k):
            if k % w == 0:
                variants[(k, f"panels of {w}" + (" (whole)" if w == k else ""))] = session("panels", 2 * k, w)
    times = {key: [] for key in variants}
    for r in range(rounds):
        for key in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            sess, feeds = variants[key]
            sess.run(None, feeds)
            start = time.perf_counter()
            for _ in range(20):
                sess.run(None, feeds)
            times[key].append((time.perf_counter() - start) / 20 * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def decode_rates(model: str, sparsities: list[float], rounds: int, threads: int, new_tokens: int) -> list[dict]:
    from glass_onnx.compiler.compile import CompileOptions, compile_model
    from glass_onnx.compiler.export import dense_artifact
    from glass_onnx.runtime import Generator
    from glass_onnx.runtime.panel_trial import PanelWidthTrial
    from glass_onnx.tools.bench import bench_prompt

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dense, _ = dense_artifact(model)
        for sparsity in sparsities:
            artifact = Path(tmp) / f"a-glass-{sparsity:g}"
            compile_model(model, artifact, CompileOptions(method="a-glass", sparsity=sparsity, budget="uniform",
                                                          warmup=0), force=True)
            generators = {"dense": Generator(dense, threads=threads)}
            for fixed in ("narrow", "whole", None):
                generators[fixed or "trial"] = g = Generator(artifact, threads=threads)
                g.decoder.panels = PanelWidthTrial(fixed=fixed)
            prompt = bench_prompt(generators["dense"].codec, 32)
            settle = 8 + max(g.decoder.steps_to_settle for g in generators.values())  # past the trial
            tokens = {name: g.generate(prompt, max_new_tokens=settle, ignore_eos=True).tokens
                      for name, g in generators.items()}
            rates = {name: [] for name in generators}
            for r in range(rounds):
                for name, g in (list(generators.items()) if r % 2 == 0 else list(generators.items())[::-1]):
                    time.sleep(0.2)
                    rates[name].append(g.generate(prompt, max_new_tokens=new_tokens, ignore_eos=True)
                                       .decode_tokens_per_s)
            trial = generators["trial"].decoder.panels
            for name, values in rates.items():
                rows.append({"sparsity": sparsity, "variant": name, "tok_s": statistics.median(values),
                             "vs_dense": statistics.median(a / b for a, b in zip(values, rates["dense"])),
                             "vs_narrow": statistics.median(a / b for a, b in zip(values, rates["narrow"]))})
            rows.append({"sparsity": sparsity, "trial_chose": trial.choice,
                         "trial_step_ms": {n: round(statistics.median(t[1:]) * 1e3, 2) for n, t in trial.times.items()},
                         "same_tokens": all(t == tokens["narrow"] for n, t in tokens.items() if n != "dense")})
    return rows


def matmul_profile(model: str, sparsity: float, threads: int) -> dict:
    import json
    from collections import Counter

    import onnxruntime as ort

    from glass_onnx.compiler.compile import CompileOptions, compile_model
    from glass_onnx.compiler.export import dense_artifact
    from glass_onnx.runtime import Generator
    from glass_onnx.runtime.panel_trial import PanelWidthTrial
    from glass_onnx.tools.bench import bench_prompt

    plain_options = ort.SessionOptions
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        class Profiled(plain_options):
            def __init__(self):
                super().__init__()
                self.enable_profiling, self.profile_file_prefix = True, str(Path(tmp) / "profile")

        dense, _ = dense_artifact(model)
        artifact = Path(tmp) / "a-glass"
        compile_model(model, artifact, CompileOptions(method="a-glass", sparsity=sparsity, budget="uniform", warmup=0),
                      force=True)
        for name, path, fixed in (("dense", dense, None), ("narrow", artifact, "narrow"), ("whole", artifact, "whole")):
            ort.SessionOptions = Profiled
            try:
                generator = Generator(path, threads=threads)
            finally:
                ort.SessionOptions = plain_options
            if fixed:
                generator.decoder.panels = PanelWidthTrial(fixed=fixed)
            generator.generate(bench_prompt(generator.codec, 32), max_new_tokens=201, ignore_eos=True)
            events = json.loads(Path(generator.decoder.decode_session.end_profiling()).read_text())
            runs = [e for e in events if e.get("name") == "model_run"][1:]  # after the prompt's
            by_shape = Counter()
            for e in events:
                if e.get("cat") == "Node" and e["ts"] >= runs[0]["ts"] and e["args"].get("op_name") == "MatMul":
                    what = "compact " if "compact_ffn" in e["name"] else ""
                    shape = ", ".join(map(str, e["args"]["output_type_shape"][0]["float"]))
                    by_shape[f"{what}[{shape}]"] += e["dur"]
            report[name] = {k: round(v / len(runs) / 1e3, 2) for k, v in by_shape.most_common(6)}
            report[name]["step (profiled)"] = round(statistics.mean(e["dur"] for e in runs) / 1e3, 2)
            del generator  # its sessions write their profiles into tmp
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--sparsity", default="0.25,0.5")
    parser.add_argument("--what", default="matmul,decode")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    sparsities = [float(s) for s in args.sparsity.split(",")]
    what = args.what.split(",")
    if "matmul" in what:
        from glass_onnx.compiler.export import dense_artifact
        from glass_onnx.runtime import load_manifest

        config = load_manifest(dense_artifact(args.model)[0])["model"]
        size, hidden, layers = config["intermediate_size"], config["hidden_size"], config["num_layers"]
        ks = [round(size * (1 - s)) for s in sparsities]
        print(f"one-token gate/up matmul, {layers} layers, H={hidden}, {args.threads} thread(s), ms (median)")
        for (k, name), ms in matmul_times(hidden, ks, layers, args.rounds * 2, args.threads).items():
            print(f"  k={k:5d}  {name:28s} {ms:7.2f}")
    if "profile" in what:
        for name, row in matmul_profile(args.model, sparsities[0], args.threads).items():
            print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if "decode" in what:
        for row in decode_rates(args.model, sparsities, args.rounds, args.threads, args.new_tokens):
            print("  " + ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
