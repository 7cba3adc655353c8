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


def report_markdown(report: dict[str, Any]) -> str:
    rows = {"reward model": report["model"], **report["baselines"]}
    lines = [
        "# Held-out evaluation",
        "",
        "Pairwise accuracy = pairs where the preferred answer scores strictly higher / all pairs (ties count as "
        "wrong). Intervals: 95% bootstrap over prompts. Baselines are scored on the same pairs.",
        "",
        "| scorer | accuracy | 95% CI | ties | gap 1 | gap 2 | gap 3+ | Kendall tau | top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        gaps = [_fmt(r["by_rank_gap"].get(g, {}).get("accuracy")) for g in ("1", "2", "3+")]
        lines.append(
            f"| {name} | {r['pairwise_accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} | {r['num_ties']} | "
            f"{' | '.join(gaps)} | {_fmt(r['kendall_tau'])} | {_fmt(r['top1_accuracy'])} |"
        )
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
    per_pair.to_json(out / "pairs.jsonl", orient="records", lines=True)
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    plot_report(out / "report.png", chosen, rejected, report["model"], report["baselines"])
