"""Metrics over scored preference pairs: bootstrap intervals over prompts, accuracy by rank gap, per-prompt
Kendall's tau and top-1, and trivial baselines. Pure numpy; every function is checked on hand-computed cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

GAP_BUCKETS = ("1", "2", "3+")


def pair_outcomes(chosen: np.ndarray, rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tie) per pair: correct = chosen strictly higher; a tie is wrong."""
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    return chosen > rejected, chosen == rejected


def bootstrap_interval(
    correct: np.ndarray, prompt_ids: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of accuracy when resampling prompts (pairs of one prompt are not independent)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        return (float("nan"), float("nan"))
    codes, _ = pd.factorize(pd.Series(prompt_ids))
    per_prompt_correct = np.bincount(codes, weights=correct)
    per_prompt_pairs = np.bincount(codes).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, per_prompt_pairs.size, size=(n_boot, per_prompt_pairs.size))
    accuracies = per_prompt_correct[draws].sum(axis=1) / per_prompt_pairs[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(accuracies, [tail, 100.0 - tail])
    return float(low), float(high)


def gap_bucket(margin: np.ndarray) -> np.ndarray:
    margin = np.asarray(margin, dtype=np.float64)
    return np.where(margin <= 1.0, "1", np.where(margin <= 2.0, "2", "3+"))


def listwise(pairs: pd.DataFrame, correct: np.ndarray, tie: np.ndarray) -> dict[str, Any]:
    """Kendall's tau and top-1 per prompt with more than 2 answers, averaged over those prompts.

    Over a prompt's pairs (every pair of answers with different ranks): tau = (concordant - discordant) / pairs,
    score ties count as neither. Top-1: the best answer (the one that wins all its pairs) scores strictly highest.
    """
    frame = pd.DataFrame(
        {"prompt": pairs["prompt"].to_numpy(), "chosen": pairs["chosen"].to_numpy(), "correct": correct, "tie": tie}
    )
    answers = pd.concat([pairs[["prompt", "chosen"]].set_axis(["prompt", "a"], axis=1),
                         pairs[["prompt", "rejected"]].set_axis(["prompt", "a"], axis=1)])  # fmt: skip
    k = answers.drop_duplicates().groupby("prompt").size()
    many = k[k > 2].index
    frame = frame[frame["prompt"].isin(many)]
    if frame.empty:
        return {"prompts_with_more_than_2_answers": 0, "kendall_tau": None, "top1_accuracy": None}
    concordant = frame.groupby("prompt")["correct"].sum()
    ties = frame.groupby("prompt")["tie"].sum()
    n = frame.groupby("prompt").size()
    tau = (concordant - (n - concordant - ties)) / n
    # The best answer is chosen in K-1 pairs; it is top-1 when it wins all of them.
    wins_needed = k.loc[many] - 1
    best_rows = frame.groupby(["prompt", "chosen"])["correct"].agg(["size", "sum"]).reset_index()
    best_rows = best_rows[best_rows["size"].to_numpy() == wins_needed.loc[best_rows["prompt"]].to_numpy()]
    top1 = best_rows.set_index("prompt")["sum"] == best_rows.set_index("prompt")["size"]
    return {
        "prompts_with_more_than_2_answers": len(many),
        "kendall_tau": float(tau.mean()),
        "top1_accuracy": float(top1.reindex(many, fill_value=False).mean()),
    }


def summarize(
    pairs: pd.DataFrame, chosen_scores: np.ndarray, rejected_scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy with its prompt-bootstrap interval, ties, accuracy by rank gap, Kendall's tau and top-1."""
    correct, tie = pair_outcomes(chosen_scores, rejected_scores)
    prompts = pairs["prompt"].to_numpy()
    low, high = bootstrap_interval(correct, prompts, n_boot, seed)
    result: dict[str, Any] = {
        "pairwise_accuracy": float(correct.mean()) if correct.size else float("nan"),
        "ci95": [low, high],
        "num_pairs": int(correct.size),
        "num_correct": int(correct.sum()),
        "num_ties": int(tie.sum()),
        "by_rank_gap": {},
    }
    margin = pairs["margin"].to_numpy() if "margin" in pairs else np.ones(len(pairs))
    buckets = gap_bucket(margin)
    for name in GAP_BUCKETS:
        mask = buckets == name
        if mask.any():
            b_low, b_high = bootstrap_interval(correct[mask], prompts[mask], n_boot, seed)
            result["by_rank_gap"][name] = {
                "accuracy": float(correct[mask].mean()), "ci95": [b_low, b_high], "num_pairs": int(mask.sum()),
            }  # fmt: skip
    result.update(listwise(pairs, correct, tie))
    result["length"] = length_bias(pairs, chosen_scores, rejected_scores)
    return result


def length_bias(pairs: pd.DataFrame, chosen_scores: np.ndarray, rejected_scores: np.ndarray) -> dict[str, Any]:
    """How much the scores follow answer length (characters): Spearman's correlation of score and length over the
    answers, and accuracy on the pairs whose chosen answer is the longer one and on those where it is the shorter
    one (equal lengths in neither). Their mean is the length-controlled accuracy: 0.5 for "longer answer wins"."""
    chosen_len = pairs["chosen"].str.len().to_numpy(dtype=np.float64)
    rejected_len = pairs["rejected"].str.len().to_numpy(dtype=np.float64)
    scores = pd.Series(np.concatenate([chosen_scores, rejected_scores]), dtype=np.float64)
    lengths = pd.Series(np.concatenate([chosen_len, rejected_len]))
    rho = scores.corr(lengths, method="spearman") if len(scores) > 2 else float("nan")
    correct, _ = pair_outcomes(chosen_scores, rejected_scores)
    result: dict[str, Any] = {"spearman_score_length": None if np.isnan(rho) else float(rho)}
    accuracies = []
    for name, mask in (("chosen_longer", chosen_len > rejected_len), ("chosen_shorter", chosen_len < rejected_len)):
        accuracy = float(correct[mask].mean()) if mask.any() else None
        result[f"accuracy_{name}"] = accuracy
        result[f"pairs_{name}"] = int(mask.sum())
        accuracies.append(accuracy)
    both = all(a is not None for a in accuracies)
    result["length_controlled_accuracy"] = float(np.mean(accuracies)) if both else None
    return result


def length_scores(pairs: pd.DataFrame, longer_wins: bool) -> tuple[np.ndarray, np.ndarray]:
    """Trivial baseline scores: answer length in characters (or its negative)."""
    sign = 1.0 if longer_wins else -1.0
    return (
        sign * pairs["chosen"].str.len().to_numpy(dtype=np.float64),
        sign * pairs["rejected"].str.len().to_numpy(dtype=np.float64),
    )
