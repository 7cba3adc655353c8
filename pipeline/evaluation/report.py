"""The evaluation report: report.md, summary.json, pairs.jsonl and report.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation.plot import plot_report


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(report: dict[str, Any]) -> list[str]:
    """The Markdown table of the reward model and its baselines (also in the model card)."""
    rows = {"reward model": report["model"], **report["baselines"]}
    lines = [
        "| scorer | accuracy | 95% CI | ties | gap 1 | gap 2 | gap 3+ | Kendall tau | top-1 | length-controlled "
        "accuracy | ρ(score, length) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if r.get("sampled"):  # the untrained baseline on a seeded sample of the pairs (its interval says how wide)
            name = f"{name} ({r['num_pairs']}-pair sample)"
        gaps = [_fmt(r["by_rank_gap"].get(g, {}).get("accuracy")) for g in ("1", "2", "3+")]
        length = r.get("length", {})
        lines.append(
            f"| {name} | {r['pairwise_accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} | {r['num_ties']} | "
            f"{' | '.join(gaps)} | {_fmt(r['kendall_tau'])} | {_fmt(r['top1_accuracy'])} | "
            f"{_fmt(length.get('length_controlled_accuracy'))} | {_fmt(length.get('spearman_score_length'))} |"
        )
    return lines


def _overlap_lines(overlap: dict[str, Any] | None) -> tuple[str, list[str]]:
    """The title, and what the report says about pairs from training prompts (a training run's test split has none)."""
    if overlap is None:
        return "Held-out evaluation", []
    if not overlap["known"]:
        return "Evaluation (overlap with the training data unknown)", [
            f"Whether these pairs come from the model's training prompts is unknown: {overlap.get('note', '')}.",
            "",
        ]
    n, total = overlap["pairs_from_training_prompts"], overlap["num_pairs"]
    if n == 0 and overlap.get("pairs_left_out"):
        return f"Held-out evaluation ({total} pairs; {overlap['pairs_left_out']} from training prompts left out)", []
    if n == 0:
        return f"Held-out evaluation (none of the {total} pairs from training prompts)", []
    return f"Evaluation ({n} of {total} pairs from training prompts: not held-out)", [
        f"**Not held-out:** {n} of {total} pairs ({overlap['prompts_from_training']} of {overlap['num_prompts']} "
        "prompts) come from prompts the model was trained on, so this accuracy overstates how it does on new prompts "
        "(rerun with --heldout_only to score only the others).",
        "",
    ]


def report_markdown(report: dict[str, Any]) -> str:
    title, overlap = _overlap_lines(report.get("training_overlap"))
    lines = [
        f"# {title}",
        "",
        *overlap,
        "Pairwise accuracy = pairs where the preferred answer scores strictly higher / all pairs (ties count as "
        "wrong). Intervals: 95% bootstrap over prompts. Baselines are scored on the same pairs. Length-controlled "
        "accuracy = the mean of the accuracy on pairs whose preferred answer is the longer one and on pairs where it "
        'is the shorter one (0.5 for "longer answer wins"); ρ = Spearman\'s correlation of score and answer length.',
        "",
        *metrics_table(report),
    ]
    best = report["best_trivial_baseline"]
    lines += ["", f"{report['model']['num_pairs']} pairs. Best trivial baseline: {best['name']} "
              f"({best['pairwise_accuracy']:.3f}).", "", "![evaluation](report.png)", ""]  # fmt: skip
    return "\n".join(lines)


def write_report(out_dir: str | Path, pairs: pd.DataFrame, result: dict[str, Any], report: dict[str, Any]) -> None:
    """pairs.jsonl (per-pair scores), summary.json, report.md and report.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen, rejected = np.asarray(result["chosen_scores"]), np.asarray(result["rejected_scores"])
    prompt_ids, _ = pd.factorize(pairs["prompt"])
    per_pair = pd.DataFrame(
        {
            "prompt_id": prompt_ids,
            "chosen_score": chosen,
            "rejected_score": rejected,
            "correct": chosen > rejected,
            "margin": pairs["margin"].to_numpy() if "margin" in pairs else 1.0,
        }
    )
    if "from_training_prompt" in pairs:
        per_pair["from_training_prompt"] = pairs["from_training_prompt"].to_numpy()
    per_pair.to_json(out / "pairs.jsonl", orient="records", lines=True)
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    plot_report(out / "report.png", chosen, rejected, report["model"], report["baselines"])
