"""The evaluation phase of a training run: the untrained baseline (before training, on a sample of the held-out
pairs), the trained model on every held-out pair, the report with the trivial baselines, and the reward statistics
stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
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


@dataclass
class UntrainedBaseline:
    pairs: pd.DataFrame  # the seeded sample of held-out pairs it was scored on
    result: dict[str, Any]


def untrained_baseline(
    untrained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test_pairs: pd.DataFrame,
    *,
    max_length: int,
    batch_size: int,
    max_pairs: int,
    seed: int,
) -> UntrainedBaseline:
    """The untrained model (the run's own initial weights and head) on a seeded sample of at most `max_pairs`
    held-out pairs: a reference, so scored with autocast where that is native. Run before training, while that
    model exists anyway."""
    sample = baseline_sample(test_pairs, max_pairs, seed)
    result = evaluate_pairs(
        untrained, tokenizer, sample, max_length, batch_size, progress=True, desc="untrained baseline", precision="auto"
    )
    return UntrainedBaseline(sample, result)


def evaluate_trained(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test_pairs: pd.DataFrame,
    train_encoded: EncodedPairs,
    baseline: UntrainedBaseline,
    *,
    max_length: int,
    batch_size: int,
    seed: int,
    reward_stats_max_answers: int,
) -> HeldOutEvaluation:
    """Every held-out pair scored once, exactly (fp32), by the trained model; the report with the baselines; the
    reward statistics from those scores (topped up with training answers only when there are few)."""
    result = evaluate_pairs(model, tokenizer, test_pairs, max_length, batch_size, progress=True, desc="held-out pairs")
    report = build_report(test_pairs, result, baseline.result, seed=seed, untrained_pairs=baseline.pairs)
    stats = reward_statistics(
        np.asarray(result["answer_scores"]), model, tokenizer, train_encoded, reward_stats_max_answers, batch_size, seed
    )
    return HeldOutEvaluation(test_pairs, result, report, stats)


def baseline_sample(pairs: pd.DataFrame, max_pairs: int, seed: int) -> pd.DataFrame:
    """At most `max_pairs` of the pairs, a seeded sample in their order (all of them when there are fewer)."""
    if len(pairs) <= max_pairs:
        return pairs
    index = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
    return pairs.iloc[index].reset_index(drop=True)
