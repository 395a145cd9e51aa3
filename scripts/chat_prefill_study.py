"""Time to first token on chat prompts: the fast layout leaves the template's opening out of the statistic by
select's token mask, in one decoder and select call (shipped), against giving the opening a chunk of its own and
restarting the statistic after it, as the reference layout must (the fast layout's way until 2026-12-05). Both give
the same kept neurons, checked here on every prompt. Dense beside; interleaved, medians (BENCHMARKS.md).

    python scripts/chat_prefill_study.py smollm2-135m out/smollm2-135m-a-glass-0.25 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from glass_onnx.runtime import Generator
from glass_onnx.runtime.decoder import Decoder

PROMPTS = ["Why is the sky blue?",
           "Write a short poem about a lighthouse keeper who has not spoken to anyone in eleven years.",
           "Explain the difference between a list and a tuple in Python, with an example of each."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model the artifact was compiled from (its dense export runs beside)")
    parser.add_argument("artifact")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from glass_onnx.compiler.export import dense_artifact

    sparse = Generator(args.artifact, threads=args.threads)
    dense = Generator(dense_artifact(args.model)[0], threads=args.threads)
    decoder = sparse.decoder

    def one_pass(ids, opening):
        state = decoder.new_state()
        decoder.prefill_prompt(state, ids, uncounted=opening)
        return state

    def own_chunk(ids, opening):
        state = decoder.new_state()
        Decoder._prefill_chunks(decoder, state, ids, np.ones_like(ids), None, opening, ids.shape[1])
        return state

    variants = {"dense": lambda ids, opening: dense.decoder.prefill_prompt(dense.decoder.new_state(), ids),
                "one pass (shipped)": one_pass, "opening's own chunk": own_chunk}
    for text in PROMPTS:
        ids = np.array([sparse.encode(text, chat=True)])
        opening = sparse.codec.template_prefix_length(ids[0].tolist())
        same = all(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(one_pass(ids, opening).kept, own_chunk(ids, opening).kept))
        times = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, run in (list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]):
                start = time.perf_counter()
                run(ids, opening)
                times[name].append((time.perf_counter() - start) * 1e3)
        print(f"{ids.shape[1]} tokens, opening {opening}, same kept neurons: {same}; prefill + select, ms: "
              + ", ".join(f"{name} {statistics.median(t):.1f}" for name, t in times.items()))


if __name__ == "__main__":
    main()
