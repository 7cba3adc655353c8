"""The evaluation figure: score distributions of chosen vs rejected, and accuracy by rank gap with baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_report(
    path: str | Path, chosen: np.ndarray, rejected: np.ndarray, model: dict[str, Any], baselines: dict[str, dict]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)

    bins = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=30)
    left.hist(chosen, bins=bins, alpha=0.6, label=f"chosen (mean {np.mean(chosen):.2f})", color="#2a7ab9")
    left.hist(rejected, bins=bins, alpha=0.6, label=f"rejected (mean {np.mean(rejected):.2f})", color="#d9822b")
    left.set_title("Reward scores on held-out pairs")
    left.set_xlabel("score")
    left.set_ylabel("answers")
    left.legend(frameon=False)
    left.xaxis.set_major_locator(plt.MaxNLocator(6))

    gaps = list(model["by_rank_gap"])
    x = np.arange(len(gaps))
    acc = np.array([model["by_rank_gap"][g]["accuracy"] for g in gaps])
    low = np.array([model["by_rank_gap"][g]["ci95"][0] for g in gaps])
    high = np.array([model["by_rank_gap"][g]["ci95"][1] for g in gaps])
    right.bar(x, acc, width=0.55, color="#2a7ab9", label="reward model (95% CI)")
    right.errorbar(x, acc, yerr=[acc - low, high - acc], fmt="none", ecolor="black", capsize=5)
    for g, xi, a in zip(gaps, x, acc, strict=True):
        right.text(xi, 0.02, f"n={model['by_rank_gap'][g]['num_pairs']}", ha="center", color="white", fontsize=9)
        right.text(xi + 0.3, a - 0.04, f"{a:.2f}", ha="left", fontsize=9)
    styles = iter([("#d9822b", "--"), ("#7a7a7a", ":"), ("#8e44ad", "-.")])
    for name, result in baselines.items():
        color, style = next(styles, ("#555555", "--"))
        right.axhline(result["pairwise_accuracy"], color=color, linestyle=style,
                      label=f"{name}: {result['pairwise_accuracy']:.2f}")  # fmt: skip
    right.axhline(0.5, color="#bbbbbb", linewidth=0.8)
    right.set_xticks(x, [f"gap {g}" for g in gaps])
    right.set_ylim(0, 1)
    right.set_ylabel("pairwise accuracy")
    right.set_title(f"Accuracy by rank gap (overall {model['pairwise_accuracy']:.3f}, {model['num_pairs']} pairs)")
    right.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)

    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
