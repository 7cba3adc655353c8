"""Exact pairwise accuracy through `evaluate`, on hand-computed scores."""

from __future__ import annotations

import evaluate
import pandas as pd
import pytest
import torch

from pipeline.evaluation.accuracy import evaluate_pairs
from pipeline.evaluation.metric_modules import PAIRWISE_ACCURACY


def test_metric_on_hand_computed_scores() -> None:
    metric = evaluate.load(PAIRWISE_ACCURACY)
    result = metric.compute(chosen_scores=[2.0, 0.1, -1.0, 3.0, 0.5], rejected_scores=[1.0, 0.2, -2.0, 3.0, -0.5])
    # correct: 2>1, -1>-2, 0.5>-0.5; wrong: 0.1<0.2; tie: 3==3 counts as wrong
    assert result == {"pairwise_accuracy": 3 / 5, "num_pairs": 5, "num_correct": 3, "num_ties": 1}


def test_metric_is_exact_not_a_mean_of_batch_means() -> None:
    # Batches of 3 (all right) and 1 (wrong): TRL's mean of batch means says 0.5, the truth is 3/4.
    metric = evaluate.load(PAIRWISE_ACCURACY)
    for chosen, rejected in [([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), ([0.0], [1.0])]:
        metric.add_batch(chosen_scores=chosen, rejected_scores=rejected)
    assert metric.compute()["pairwise_accuracy"] == pytest.approx(0.75)


class LengthReward(torch.nn.Module):
    """A stand-in reward model whose score is the number of tokens: hand-checkable."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **_):
        return type("Out", (), {"logits": attention_mask.sum(dim=1, keepdim=True).float() + self.weight})()


def test_evaluate_pairs_scores_every_pair_once_and_counts_ties(tiny_tokenizer) -> None:
    pairs = pd.DataFrame(
        {
            "prompt": ["why", "why", "why", "how"],
            "chosen": ["because the sky is blue", "no", "yes", "boil water"],
            "rejected": ["no", "because of light", "no", "cook pasta in salt water"],
        }
    )
    result = evaluate_pairs(LengthReward(), tiny_tokenizer, pairs, max_length=64, batch_size=2)
    # longer wins: pair 1 right, pair 2 wrong, pair 3 tie ("yes" vs "no": same length), pair 4 wrong
    assert result["num_pairs"] == 4 and result["num_correct"] == 1 and result["num_ties"] == 1
    assert result["pairwise_accuracy"] == 0.25
