"""Report metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.metrics import bootstrap_interval, length_scores, listwise, pair_outcomes, summarize


def ranked_pairs() -> pd.DataFrame:
    # Prompt p: answers a(1) b(2) c(3); prompt q: x(1) y(2).
    return pd.DataFrame(
        {
            "prompt": ["p", "p", "p", "q"],
            "chosen": ["a", "a", "b", "x"],
            "rejected": ["b", "c", "c", "y"],
            "margin": [1.0, 2.0, 1.0, 1.0],
        }
    )


def test_outcomes_count_ties_as_wrong() -> None:
    correct, tie = pair_outcomes(np.array([1.0, 2.0, 0.0]), np.array([0.0, 2.0, 1.0]))
    assert correct.tolist() == [True, False, False] and tie.tolist() == [False, True, False]


def test_bootstrap_resamples_prompts_not_pairs() -> None:
    # One prompt with 3 right pairs, one with 1 wrong pair: every resample of prompts gives 0, 0.75 or 1.
    correct = np.array([1, 1, 1, 0], dtype=bool)
    prompts = np.array(["p", "p", "p", "q"])
    low, high = bootstrap_interval(correct, prompts, n_boot=2000, seed=1)
    assert low == 0.0 and high == 1.0
    assert bootstrap_interval(np.ones(10, dtype=bool), np.arange(10)) == (1.0, 1.0)


def test_summary_by_gap_tau_and_top1() -> None:
    pairs = ranked_pairs()
    # scores: a=3, b=1, c=2 -> a>b right, a>c right, b>c wrong; x=0, y=0 -> tie
    scores = {"a": 3.0, "b": 1.0, "c": 2.0, "x": 0.0, "y": 0.0}
    chosen = pairs["chosen"].map(scores).to_numpy()
    rejected = pairs["rejected"].map(scores).to_numpy()
    result = summarize(pairs, chosen, rejected, n_boot=200)
    assert result["pairwise_accuracy"] == 0.5 and result["num_ties"] == 1 and result["num_pairs"] == 4
    assert result["by_rank_gap"]["1"]["accuracy"] == pytest.approx(1 / 3)  # a>b right, b>c wrong, x/y tie
    assert result["by_rank_gap"]["2"]["accuracy"] == 1.0 and "3+" not in result["by_rank_gap"]
    # Only p has more than 2 answers: tau = (2 concordant - 1 discordant) / 3; a is top-1.
    assert result["prompts_with_more_than_2_answers"] == 1
    assert result["kendall_tau"] == pytest.approx(1 / 3)
    assert result["top1_accuracy"] == 1.0


def test_top1_fails_when_best_answer_is_beaten() -> None:
    pairs = ranked_pairs()
    scores = {"a": 1.5, "b": 1.0, "c": 2.0, "x": 1.0, "y": 0.0}
    correct, tie = pair_outcomes(pairs["chosen"].map(scores).to_numpy(), pairs["rejected"].map(scores).to_numpy())
    out = listwise(pairs, correct, tie)
    assert out["top1_accuracy"] == 0.0
    assert out["kendall_tau"] == pytest.approx((1 - 2) / 3)  # a>b right; a<c, b<c wrong


def test_length_baselines() -> None:
    pairs = pd.DataFrame(
        {"prompt": ["p", "p"], "chosen": ["short", "a much longer answer"], "rejected": ["longer one", "x"]}
    )
    longer = summarize(pairs, *length_scores(pairs, longer_wins=True), n_boot=50)
    shorter = summarize(pairs, *length_scores(pairs, longer_wins=False), n_boot=50)
    assert longer["pairwise_accuracy"] == 0.5 and shorter["pairwise_accuracy"] == 0.5
    assert longer["num_ties"] == 0


def test_length_bias_on_hand_computed_pairs() -> None:
    from pipeline.evaluation.metrics import length_bias

    pairs = pd.DataFrame(
        {
            "prompt": ["p"] * 4,
            "chosen": ["aaaa", "bb", "cccccc", "d"],  # chosen longer, shorter, longer, shorter
            "rejected": ["x", "yyyy", "z", "wwwwww"],
        }
    )
    # Right on pair 1 and 2 (one longer, one shorter chosen), wrong on 3 (longer chosen) and 4 (shorter chosen).
    chosen, rejected = np.array([2.0, 3.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])
    result = length_bias(pairs, chosen, rejected)
    assert result["accuracy_chosen_longer"] == 0.5 and result["pairs_chosen_longer"] == 2
    assert result["accuracy_chosen_shorter"] == 0.5 and result["pairs_chosen_shorter"] == 2
    assert result["length_controlled_accuracy"] == 0.5
    # "Longer answer wins" follows length exactly: rho = 1, and length-controlled accuracy is 0.5 whatever the data.
    longer = length_bias(pairs, *length_scores(pairs, longer_wins=True))
    assert longer["spearman_score_length"] == pytest.approx(1.0)
    assert longer["accuracy_chosen_longer"] == 1.0 and longer["accuracy_chosen_shorter"] == 0.0
    assert longer["length_controlled_accuracy"] == 0.5
    # No pair where chosen is shorter: that accuracy and the controlled one are unknown, not made up.
    assert length_bias(pairs.iloc[[0, 2]], chosen[[0, 2]], rejected[[0, 2]])["length_controlled_accuracy"] is None
