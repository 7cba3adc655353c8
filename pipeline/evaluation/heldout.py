"""The evaluation phase of a training run: the trained model and the untrained baseline on the held-out pairs, the
report with the trivial baselines, and the reward statistics stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.evaluation.accuracy import build_report, evaluate_pairs, reward_statistics
from pipeline.model.encoding import EncodedPairs


@dataclass
class HeldOutEvaluation:
    pairs: pd.DataFrame  # the held-out pairs (prompt, chosen, rejected, margin)
    result: dict[str, Any]  # the trained model's metrics, with per-pair scores
    report: dict[str, Any]  # model, baselines and the best trivial baseline (summary.json)
    reward_stats: dict[str, float | int]  # reward_mean, reward_std, reward_stats_answers


def evaluate_trained(
    model: PreTrainedModel,
    untrained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test_pairs: pd.DataFrame,
    train_encoded: EncodedPairs,
    *,
    max_length: int,
    batch_size: int,
    seed: int,
    reward_stats_max_answers: int,
) -> HeldOutEvaluation:
    """Every held-out pair scored once by the trained model and by the untrained one (same head seed), on the trained
    model's device; then the reward statistics over (a sample of) the training answers."""
    evaluate_args = (tokenizer, test_pairs, max_length, batch_size)
    result = evaluate_pairs(model, *evaluate_args, progress=True, desc="held-out pairs")
    # A reference, not the headline: scored with autocast where that is native (the trained model's number is fp32).
    baseline = evaluate_pairs(
        untrained.to(model.device), *evaluate_args, progress=True, desc="untrained baseline", precision="auto"
    )
    report = build_report(test_pairs, result, baseline, seed=seed)
    stats = reward_statistics(model, tokenizer, train_encoded, reward_stats_max_answers, batch_size)
    return HeldOutEvaluation(test_pairs, result, report, stats)
