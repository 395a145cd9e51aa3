"""One figure for issue 14's targets: A-GLASS against GRIFFIN and the static global-a mask, and calibrated against
uniform budgets, per model, prompt kind and sparsity, each with its 90% paired interval over prompts.

    python scripts/targets_plot.py -o docs/eval/targets.png \\
        SmolLM2=docs/eval/smollm2-default-test SmolLM2=docs/eval/smollm2-chat60-baselines ...

Every comparison pairs a run's own configurations (evaluation.report: the same prompts, selection block and warm-up;
the same budget against a baseline); where several runs give one comparison, the one with the most prompts is drawn,
with an interval if two have as many. A run without per-prompt KL gives a point without an interval. Prints the
figures it draws.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glass_onnx.evaluation.report import CHAT_BUCKETS, CONFIG, by_kind, change_interval, same_setup  # noqa: E402

PANELS = ("vs GRIFFIN", "vs global-a", "calibrated vs uniform budgets")


def change(a: dict, b: dict, prompts: int) -> tuple[float, float | None, float | None, int]:
    """(a's KL change against b in %, its 90% interval's ends or None, prompts)."""
    mid, interval = change_interval(a, b)
    return mid, *(interval or (None, None)), prompts


def comparisons(model: str, run: Path) -> dict:
    """{(panel, model, kind, sparsity): change(...)} for A-GLASS; in the baselines' panels, on the run's calibrated
    budgets where it has them (the shipped default; a model whose samples keep uniform counts has only those)."""
    result = json.loads((run / "results.json").read_text())
    count = {kind: sum((p["bucket"] in CHAT_BUCKETS) == (kind == "chat") for p in result["prompts"])
             for kind in ("prose", "chat")}
    out = {}
    for kind, rows in by_kind(result["by_bucket"]).items():
        for r in (r for r in rows if r["method"] == "a-glass"):
            shipped = "calibrated" if any(b["budget"] == "calibrated" and b["sparsity"] == r["sparsity"]
                                          for b in rows) else "uniform"
            for panel, method in (("vs GRIFFIN", "griffin"), ("vs global-a", "global-a")):
                base = next((b for b in rows if b["method"] == method and b["sparsity"] == r["sparsity"]
                             and same_setup(b, r)), None)
                if base and r["budget"] == shipped:
                    out[(panel, model, kind, r["sparsity"])] = change(r, base, count[kind])
            uniform = next((u for u in rows if u["budget"] == "uniform" and r["budget"] == "calibrated" and
                            all(u[key] == r[key] for key in CONFIG if key != "budget")), None)
            if uniform:
                out[(PANELS[2], model, kind, r["sparsity"])] = change(r, uniform, count[kind])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="MODEL=RUN_DIR, a results.json folder of `glass-onnx eval`")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    best: dict = {}
    for spec in args.runs:
        model, run = spec.split("=", 1)
        for key, value in comparisons(model, Path(run)).items():
            if key not in best or (value[3], value[1] is not None) > (best[key][3], best[key][1] is not None):
                best[key] = value
    fig, axes = plt.subplots(1, 3, figsize=(15, 6), sharey=True)
    rows = sorted({key[1:] for key in best}, key=lambda k: (k[0], k[1] != "prose", k[2]), reverse=True)
    for ax, panel in zip(axes, PANELS):
        for y, (model, kind, sparsity) in enumerate(rows):
            value = best.get((panel, model, kind, sparsity))
            if value is None:
                ax.text(0.02, y, "no run compares these", transform=ax.get_yaxis_transform(), va="center",
                        color="gray", fontsize=8)
                continue
            mid, low, high, prompts = value
            color = "tab:green" if high is not None and high < 0 else "tab:gray"
            if low is not None:
                ax.plot([low, high], [y, y], color=color, lw=2)
            ax.plot(mid, y, "o", color=color)
            interval = f" [{low:+.1f}, {high:+.1f}]" if low is not None else " (no interval)"
            print(f"{panel:<31} {model:<8} {kind:<5} {sparsity:.0%}: {mid:+.1f}%{interval}, {prompts} prompts")
        ax.axvline(0, color="black", lw=0.8)
        if panel == PANELS[2]:
            ax.axvline(-25, color="tab:red", ls="--", lw=1, label="target: -25% at 50%")
            ax.legend(loc="upper right")
        ax.set_title(f"A-GLASS {panel}" if panel != PANELS[2] else "A-GLASS, " + panel)
        ax.set_xlabel("change in KL(dense || sparse), % (90% paired interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{m} {k} {s:.0%}" for m, k, s in rows])
    fig.suptitle("Test split, shipped defaults (calibrated budgets, 32-token warm-up, lam 0.5); "
                 "green: the interval excludes 0")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
