"""Exact pairwise accuracy of a reward model over every pair, via the `evaluate` library, and the report's numbers.

TRL's logged `eval_accuracy` is a mean of per-batch means (biased when batches are uneven and under DDP), so the
number we report is computed here: every pair scored once, ties counted as wrong.
"""

from __future__ import annotations

from typing import Any

import evaluate
import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.core.errors import UserError
from pipeline.evaluation.metric_modules import PAIRWISE_ACCURACY
from pipeline.evaluation.metrics import length_scores, summarize
from pipeline.model.encoding import EncodedPairs, distinct_texts
from pipeline.model.scorer import RewardScorer


def evaluate_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: pd.DataFrame,
    max_length: int,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "scoring",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Exact pairwise accuracy of `model` on a frame with columns prompt, chosen, rejected.

    The model is scored in place (its device and dtype) by the one scoring engine, so the accuracy a run reports
    comes from the same code as the scores a user gets from `pipeline.score`. `precision` "auto" autocasts where that
    is native (for references such as the untrained baseline, not for the headline number).
    """
    if pairs.empty:
        raise UserError("no pairs to evaluate")
    texts = distinct_texts(pairs)
    scorer = RewardScorer(
        model, tokenizer, device=None, precision=precision, max_length=max_length, batch_size=batch_size
    )
    # Encoded and scored a chunk at a time (memory holds two chunks' token ids, not every pair's).
    size, total = scorer.chunk_size, len(texts.prompts)
    chunks = ((texts.prompts[i : i + size], texts.answers[i : i + size]) for i in range(0, total, size))
    with tqdm(total=total, desc=desc, unit="seq", disable=not progress) as bar:
        scored = list(scorer.score_stream(chunks, bar=bar))
    scores = np.concatenate([s for s, _ in scored])
    cut = np.concatenate([t for _, t in scored])
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise UserError(
            f"the model's scores are not finite (NaN or infinite) for {bad} of {len(scores)} sequences: a model just "
            "trained has diverged (lower learning_rate, or keep max_grad_norm); a saved model is broken"
        )
    chosen, rejected = scores[texts.chosen], scores[texts.rejected]
    metric = evaluate.load(PAIRWISE_ACCURACY)
    result = metric.compute(chosen_scores=chosen.astype(np.float64), rejected_scores=rejected.astype(np.float64))
    result["truncated_pairs"] = int((cut[texts.chosen] | cut[texts.rejected]).sum())
    result["max_length"] = max_length
    result["chosen_scores"] = chosen.tolist()
    result["rejected_scores"] = rejected.tolist()
    result["answer_scores"] = scores.tolist()  # each distinct (prompt, answer) once, as the encoding deduplicates
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The result without per-pair score lists (for printing and eval_results.json)."""
    return {k: v for k, v in result.items() if not k.endswith("_scores")}


def build_report(
    pairs: pd.DataFrame,
    result: dict[str, Any],
    untrained: dict[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    untrained_pairs: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Headline metric plus interval, rank-gap and listwise metrics, for the model and its baselines (same pairs; the
    untrained model's on `untrained_pairs` when it was scored on a sample of them)."""
    chosen, rejected = np.asarray(result["chosen_scores"]), np.asarray(result["rejected_scores"])
    model = {**summarize(pairs, chosen, rejected, n_boot, seed), **summary(result)}
    baselines = {
        "longer answer wins": summarize(pairs, *length_scores(pairs, longer_wins=True), n_boot, seed),
        "shorter answer wins": summarize(pairs, *length_scores(pairs, longer_wins=False), n_boot, seed),
    }
    if untrained is not None:
        sampled = pairs if untrained_pairs is None else untrained_pairs
        baselines["untrained base model"] = summarize(
            sampled, np.asarray(untrained["chosen_scores"]), np.asarray(untrained["rejected_scores"]), n_boot, seed
        )
        baselines["untrained base model"]["sampled"] = len(sampled) < len(pairs)
    trivial = {k: v for k, v in baselines.items() if k != "untrained base model"}
    best_name = max(trivial, key=lambda k: trivial[k]["pairwise_accuracy"])
    return {
        "model": model,
        "baselines": baselines,
        "best_trivial_baseline": {"name": best_name, "pairwise_accuracy": trivial[best_name]["pairwise_accuracy"]},
    }


def reward_statistics(
    heldout_scores: np.ndarray,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: EncodedPairs,
    min_answers: int,
    batch_size: int,
    seed: int = 0,
) -> dict[str, float | int]:
    """Mean and std of the trained model's scores, so users can standardise scores: over its exact scores of the
    distinct held-out answers (already computed), plus a seeded sample of training answers (autocast where native)
    when those are fewer than `min_answers`. With the 95% interval of the mean (normal approximation)."""
    scores = np.asarray(heldout_scores, dtype=np.float64)
    topped_up = 0
    if len(scores) < min_answers:
        ids = encoded.texts.input_ids
        index = np.arange(len(ids))
        if len(index) > min_answers - len(scores):
            index = np.sort(np.random.default_rng(seed).choice(index, size=min_answers - len(scores), replace=False))
        scorer = RewardScorer(model, tokenizer, device=None, precision="auto", batch_size=batch_size)
        extra = scorer.score_ids([ids[i] for i in index], progress=True, desc="reward statistics")
        scores, topped_up = np.concatenate([scores, extra]), len(index)
    std = float(scores.std())
    return {
        "reward_mean": float(scores.mean()), "reward_std": std, "reward_stats_answers": len(scores),
        "reward_stats_train_answers": topped_up, "reward_mean_ci95": round(1.96 * std / np.sqrt(len(scores)), 6),
    }  # fmt: skip
