"""A/B of two choices of the int4 fast layout (BENCHMARKS.md, "int4 design study"), one process, interleaved rounds.

    python scripts/int4_session_ab.py ARTIFACT --compare spinning --threads 2 --rounds 9 --tokens 128
    python scripts/int4_session_ab.py ARTIFACT --compare background --threads 2 --rounds 9 --tokens 256

``spinning``: the same artifact opened twice, its sessions created with and without ``session.force_spinning_stop``
(ORT's default lets a pool spin after its run). ``background``: the per-prompt decode session built on a background
thread or before the second token. Prints median decode tok/s per arm and the median per-round ratio.
"""

import argparse
import statistics
import time

import glass_onnx.runtime.fast_decoder as fast_decoder
from glass_onnx.runtime import Generator
from glass_onnx.tools.bench import bench_prompt

ARMS = {"spinning": ("stop", "spin"), "background": ("background", "sync")}
create_session = fast_decoder.create_session


def session_factory(arm: str):
    if arm != "spin":
        return create_session
    return lambda *args, **kwargs: create_session(*args, **{**kwargs, "stop_spinning": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--compare", choices=sorted(ARMS), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=256)
    a = parser.parse_args()
    generators = {}
    for arm in ARMS[a.compare]:
        fast_decoder.create_session = session_factory(arm)  # the prompt-time sessions
        generators[arm] = Generator(a.artifact, threads=a.threads)
        if a.compare == "background":
            generators[arm].decoder.build_in_background = arm == "background"
    prompt = bench_prompt(next(iter(generators.values())).codec, 32)
    tok_s = {arm: [] for arm in generators}
    for round_ in range(a.rounds + 1):  # round 0 warms up
        for arm in list(generators)[:: 1 if round_ % 2 else -1]:
            fast_decoder.create_session = session_factory(arm)  # the per-prompt decode session, made in generate
            time.sleep(0.2)
            result = generators[arm].generate(prompt, max_new_tokens=a.tokens, ignore_eos=True)
            if round_:
                tok_s[arm].append(result.decode_tokens_per_s)
    fast_decoder.create_session = create_session
    for arm, values in tok_s.items():
        print(f"{arm}: {statistics.median(values):.1f} tok/s  {[round(v, 1) for v in values]}")
    first, second = ARMS[a.compare]
    print(f"{first}/{second} per round: {statistics.median(x / y for x, y in zip(tok_s[first], tok_s[second])):.3f}")


if __name__ == "__main__":
    main()
