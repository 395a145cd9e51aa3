"""Markdown tables and plots of an evaluation's results.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from glass_onnx.evaluation.evaluate import Config
from glass_onnx.evaluation.metrics import paired_ratio_interval

INT4_NOTE = " of int4 artifacts (KL against the fp32 dense model, and against the int4 dense model)"


def _label(r: dict) -> str:
    block = f", blocks of {r['block']}" if r.get("block", 1) > 1 else ""
    block += f", {r['budget']} budget" if r.get("budget", "uniform") != "uniform" else ""
    block += f", warm-up {r['warmup']}" if r.get("warmup") else ""
    if r["method"] in ("a-glass", "i-glass"):
        return f"{r['method']} (lam {r['lam']:g}, {r['fusion']}{block})"
    return r["method"] + (f" ({block[2:]})" if block else "")


def change_interval(r: dict, other: dict, kl: str = "kl") -> tuple[float, tuple[float, float] | None]:
    """r's KL against other's in %: the relative change (negative = r better) and, where both carry per-prompt KL on
    the same prompts, its 90% paired bootstrap interval over prompts (metrics.paired_ratio_interval), else None."""
    change = (r[kl] - other[kl]) / other[kl] * 100
    a, b = r.get("prompt_kl"), other.get("prompt_kl")
    if kl != "kl" or not a or not b or len(a) != len(b) or len(a) < 2:
        return change, None
    low, high = paired_ratio_interval(a, b)
    return change, ((low - 1) * 100, (high - 1) * 100)


def versus(r: dict, other: dict, kl: str = "kl") -> str:
    """``change_interval`` as text: "-12.3% [-20.1, -4.0]", or the change alone."""
    change, interval = change_interval(r, other, kl)
    return f"{change:+.1f}%" + (f" [{interval[0]:+.1f}, {interval[1]:+.1f}]" if interval else "")


def same_setup(a: dict, b: dict) -> bool:
    """Two results a method comparison pairs: the same selection block, budget and warm-up."""
    return all(a.get(key) == b.get(key) for key in ("block", "budget", "warmup"))


def headline(results: list[dict], kl: str = "kl") -> list[str]:
    """GLASS vs GRIFFIN (of the same selection block, budget and warm-up) at each sparsity: relative change in
    perplexity and KL (negative = GLASS better); ``kl``: kl (against fp32 dense) or kl_int4 (against int4 dense)."""
    lines = []
    for s in sorted({r["sparsity"] for r in results if r["method"] == "griffin"}):
        for r in results:
            griffin = next((g for g in results if g["method"] == "griffin" and g["sparsity"] == s and
                            same_setup(g, r)), None)
            if r["method"] in ("a-glass", "i-glass") and r["sparsity"] == s and griffin:
                dp = (r["ppl"] - griffin["ppl"]) / griffin["ppl"] * 100
                lines.append(f"| {s:g} | {_label(r)} | {r['ppl']:.2f} vs {griffin['ppl']:.2f} ({dp:+.1f}%) | "
                             f"{r[kl]:.4f} vs {griffin[kl]:.4f} ({versus(r, griffin, kl)}) |")
    if not lines:
        return []
    return ["| sparsity | method | perplexity vs GRIFFIN | KL vs GRIFFIN (90% paired interval over prompts) |",
            "|---|---|---|---|", *lines]


CONFIG = tuple(field.name for field in dataclasses.fields(Config))
CHAT_BUCKETS = ("chat", "file-chat")


def by_kind(by_bucket: list[dict]) -> dict[str, list[dict]]:
    """{"prose": rows, "chat": rows} for the kinds a run has: each configuration's KL and per-prompt KL sums pooled
    over the kind's buckets (every configuration lists its buckets and prompts in one order, so they stay paired)."""
    pooled: dict[tuple, dict] = {}
    for row in by_bucket:
        kind = "chat" if row["bucket"] in CHAT_BUCKETS else "prose"
        entry = pooled.setdefault((kind, *(row.get(key) for key in CONFIG)),
                                  {**{key: row.get(key) for key in CONFIG}, "kl_sum": 0.0, "tokens": 0,
                                   "prompt_kl": []})
        entry["kl_sum"] += row["kl"] * row["tokens"]
        entry["tokens"] += row["tokens"]
        entry["prompt_kl"] += row.get("prompt_kl") or []
    kinds: dict[str, list[dict]] = {}
    for (kind, *_), entry in pooled.items():
        kinds.setdefault(kind, []).append({**entry, "kl": entry["kl_sum"] / max(entry["tokens"], 1)})
    return kinds


def against_baselines(by_bucket: list[dict]) -> list[str]:
    """Each GLASS configuration's KL against GRIFFIN's and the static global-a mask's (same sparsity, selection
    block, budget and warm-up), prose and chat apart, with 90% paired intervals where per-prompt KL was kept."""
    lines = []
    for kind, rows in sorted(by_kind(by_bucket).items(), key=lambda item: item[0] != "prose"):
        for r in sorted(rows, key=lambda r: (r["sparsity"], r["method"], r["lam"])):
            if r["method"] not in ("a-glass", "i-glass"):
                continue
            base = {b["method"]: b for b in rows if b["sparsity"] == r["sparsity"] and same_setup(b, r)}
            cells = [f"{base[m]['kl']:.4f} ({versus(r, base[m])})" if m in base else "-"
                     for m in ("griffin", "global-a")]
            lines.append(f"| {r['sparsity']:g} | {kind} | {_label(r)} | {r['kl']:.4f} | {' | '.join(cells)} |")
    if not lines:
        return []
    return ["| sparsity | prompts | method | KL | GRIFFIN (GLASS's change, 90% interval) | global-a (the same) |",
            "|---|---|---|---|---|---|", *lines]


def budget_effect(results: list[dict]) -> list[str]:
    """Calibrated vs uniform budgets for each configuration evaluated with both: KL and its relative change."""
    same = tuple(key for key in CONFIG if key != "budget")
    lines = []
    for r in results:
        uniform = next((u for u in results if u.get("budget") == "uniform" and
                        all(u.get(key) == r.get(key) for key in same)), None)
        if r.get("budget") == "calibrated" and uniform:
            lines.append(f"| {r['sparsity']:g} | {_label(uniform)} | {uniform['kl']:.4f} | {r['kl']:.4f} | "
                         f"{versus(r, uniform)} |")
    if not lines:
        return []
    return ["| sparsity | method | KL, uniform budgets | KL, calibrated | change (90% paired interval over prompts) |",
            "|---|---|---|---|---|", *lines]


def table(results: list[dict]) -> list[str]:
    int4, after = "kl_int4" in results[0], "kl_after" in results[0]
    rows = ["| method | sparsity | lam | fusion | block | budget | warm-up | perplexity | KL(dense‖sparse) | "
            + "top-1 agree | " + ("KL(int4 dense‖sparse) | top-1 vs int4 dense | " if int4 else "")
            + ("KL / top-1 after the longest warm-up | " if after else "") + "Jaccard vs oracle |",
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if int4 else "") + ("---|" if after else "")]
    for r in sorted(results, key=lambda r: (r["sparsity"], r["method"], r["lam"], r["fusion"], r.get("block", 1),
                                            r.get("budget", ""), r.get("warmup", 0))):
        versus_int4 = f"{r['kl_int4']:.4f} | {r['top1_int4']:.3f} | " if int4 else ""
        late = f"{r['kl_after']:.4f} / {r['top1_after']:.3f} | " if after else ""
        rows.append(f"| {r['method']} | {r['sparsity']:g} | {r['lam']:g} | {r['fusion']} | {r.get('block', 1)} | "
                    f"{r.get('budget', 'uniform')} | {r.get('warmup', 0)} | {r['ppl']:.3f} | {r['kl']:.4f} | "
                    f"{r['top1']:.3f} | {versus_int4}{late}{r['jaccard']:.3f} |")
    return rows


def plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in result["results"] if r["method"] != "dense"]
    dense = next((r for r in result["results"] if r["method"] == "dense"), None)
    files = []

    def save(fig, ax, name: str, xlabel: str, ylabel: str, title: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{result['model']}: {title}")
        if ax.get_legend_handles_labels()[1]:  # a dense-only run draws no labelled line
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    for metric, name in (("kl", "KL(dense || sparse) per token"), ("ppl", "perplexity of the dense continuation")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label in sorted({_label(r) for r in results}):
            pts = sorted((r["sparsity"], r[metric]) for r in results if _label(r) == label)
            ax.plot(*zip(*pts), marker="o", label=label)
        if metric == "ppl" and dense:
            ax.axhline(dense["ppl"], color="black", linestyle=":", label="dense")
        ax.set_yscale("log")
        save(fig, ax, f"{metric}_vs_sparsity.png", "FFN sparsity", name,
             f"{name} ({prompt_origin(result)}, G={result['gen_len']})")
    sparsities = sorted({r["sparsity"] for r in results})
    if sparsities:
        s = 0.5 if 0.5 in sparsities else sparsities[len(sparsities) // 2]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in (r for r in results if r["sparsity"] == s):
            ax.plot(r["jaccard_by_layer"], label=_label(r))
        save(fig, ax, "jaccard_by_layer.png", "layer", "Jaccard(kept, oracle)",
             f"overlap with the oracle set per layer, sparsity {s:g}")
    if result.get("calibrated_budgets"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b in result["calibrated_budgets"]:
            line, = ax.plot(b["k_per_layer"], marker="o", markersize=3,
                            label=f"calibrated {b['sparsity']:g} ({b['chosen']})")
            uniform = sum(b["k_per_layer"]) / len(b["k_per_layer"])
            ax.axhline(uniform, color=line.get_color(), linestyle=":", label=f"uniform {b['sparsity']:g}")
        if "intermediate_size" in result:
            ax.axhline(result["intermediate_size"], color="black", linewidth=0.8)
        save(fig, ax, "budgets_by_layer.png", "layer", "FFN neurons kept",
             "calibrated per-layer budgets (same total as uniform)")
    return files


def prompt_origin(result: dict) -> str:
    """Where a run's prompts came from: a split of the shipped ones, or the user's file."""
    return f"{result['split']} split" if result.get("split") else f"from {Path(result['prompts_file']).name}"


def write_report(result: dict, out: Path, samples_md: str) -> None:
    buckets = sorted({p["bucket"] for p in result["prompts"]})
    budgets = budget_effect(result["results"])
    baselines = against_baselines(result.get("by_bucket", []))
    lines = [f"# Evaluation of {result['model']}", "",
             f"{len(result['prompts'])} prompts ({prompt_origin(result)}; buckets {', '.join(buckets)}), reference = "
             f"dense greedy continuation of up to {result['gen_len']} tokens, teacher-forced through the compiled "
             f"sessions{INT4_NOTE if result.get('weights') == 'int4' else ''}. {result['seconds']:.0f} s.", "",
             "## GLASS vs GRIFFIN", "", *headline(result["results"]), "",
             *(["## GLASS vs GRIFFIN, against the int4 dense model", "", *headline(result["results"], "kl_int4"), ""]
               if result.get("weights") == "int4" else []),
             *(["## GLASS vs GRIFFIN and global-a, prose and chat apart", "", *baselines, ""] if baselines else []),
             *(["## Calibrated vs uniform budgets", "", *budgets, ""] if budgets else []),
             "## All configurations", "", *table(result["results"]), ""]
    files = plots(result, out)
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in files] + ["", "## Free-running greedy samples", "", samples_md]
    (out / "results.md").write_text("\n".join(lines) + "\n")
