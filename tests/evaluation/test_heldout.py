"""The evaluation phase of a run: exact scores on every held-out pair, the untrained baseline on a bounded seeded
sample, and reward statistics taken from scores already computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.evaluation.accuracy import evaluate_pairs
from pipeline.evaluation.heldout import baseline_sample, evaluate_trained, untrained_baseline
from pipeline.model.encoding import encode_preference_pairs


def ranked_pairs(prompts: int) -> pd.DataFrame:
    # Three answers a prompt, as all C(3,2) pairs: every answer is in two pairs.
    rows = []
    for p in range(prompts):
        answers = [f"answer {p} good and clear", f"answer {p} so so", f"answer {p} bad"]
        for i in range(3):
            for j in range(i + 1, 3):
                rows.append({"prompt": f"question {p}", "chosen": answers[i], "rejected": answers[j], "margin": 1.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    return (AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1),
            AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip


def test_baseline_sample_is_bounded_seeded_and_in_order() -> None:
    pairs = ranked_pairs(40)  # 120 pairs
    sample = baseline_sample(pairs, 50, seed=3)
    assert len(sample) == 50 and sample.equals(baseline_sample(pairs, 50, seed=3))
    assert not sample.equals(baseline_sample(pairs, 50, seed=4))
    index = pairs.reset_index().merge(sample, on=list(pairs.columns))["index"].to_numpy()
    assert len(index) == 50 and (np.diff(index) > 0).all()  # rows of the original, in its order
    assert baseline_sample(pairs, 500, seed=3) is pairs  # fewer pairs than the bound: all of them


def distinct_answer_scores(pairs: pd.DataFrame, result: dict) -> np.ndarray:
    """The oracle: each distinct (prompt, answer) of the pairs once, with its score."""
    scored = pd.DataFrame({
        "prompt": np.concatenate([pairs["prompt"].to_numpy(), pairs["prompt"].to_numpy()]),
        "answer": np.concatenate([pairs["chosen"].to_numpy(), pairs["rejected"].to_numpy()]),
        "score": np.concatenate([result["chosen_scores"], result["rejected_scores"]]),
    })  # fmt: skip
    return scored.drop_duplicates(["prompt", "answer"])["score"].to_numpy(dtype=np.float64)


def test_each_held_out_answer_counts_once_in_the_statistics(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    pairs = ranked_pairs(2)  # 6 pairs, 6 distinct answers, each in two pairs
    result = evaluate_pairs(model, tokenizer, pairs, 64, 16)
    assert len(result["answer_scores"]) == 6
    assert sorted(result["answer_scores"]) == sorted(distinct_answer_scores(pairs, result))


def test_evaluation_scores_every_pair_exactly_and_samples_only_the_baseline(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    test, train = ranked_pairs(30), ranked_pairs(5)  # 90 held-out pairs (90 answers), 15 training pairs
    encoded = encode_preference_pairs(tokenizer, train, 64)
    untrained = AutoModelForSequenceClassification.from_pretrained(model.name_or_path, num_labels=1)
    baseline = untrained_baseline(untrained, tokenizer, test, max_length=64, batch_size=16, max_pairs=25, seed=0)
    evaluation = evaluate_trained(model, tokenizer, test, encoded, baseline, max_length=64, batch_size=16, seed=0,
                                  reward_stats_max_answers=40)  # fmt: skip
    exact = evaluate_pairs(model, tokenizer, test, 64, 16)
    assert evaluation.result["chosen_scores"] == exact["chosen_scores"] and evaluation.result["num_pairs"] == 90
    baseline = evaluation.report["baselines"]["untrained base model"]
    assert baseline["num_pairs"] == 25 and baseline["sampled"] and baseline["ci95"][0] <= baseline["ci95"][1]
    stats = evaluation.reward_stats
    answers = distinct_answer_scores(test, exact)
    # 90 held-out answers >= 40: nothing more is scored, and the statistics are those of the exact scores.
    assert stats["reward_stats_answers"] == 90 and stats["reward_stats_train_answers"] == 0
    assert stats["reward_mean"] == pytest.approx(answers.mean()) and stats["reward_std"] == pytest.approx(answers.std())
    assert stats["reward_mean_ci95"] == pytest.approx(1.96 * answers.std() / np.sqrt(90), abs=1e-6)


def test_few_held_out_answers_are_topped_up_with_training_answers(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    test, train = ranked_pairs(2), ranked_pairs(20)  # 6 held-out answers; 60 training pairs
    encoded = encode_preference_pairs(tokenizer, train, 64)
    baseline = untrained_baseline(model, tokenizer, test, max_length=64, batch_size=16, max_pairs=100, seed=0)
    evaluation = evaluate_trained(model, tokenizer, test, encoded, baseline, max_length=64, batch_size=16, seed=0,
                                  reward_stats_max_answers=32)  # fmt: skip
    stats = evaluation.reward_stats
    assert stats["reward_stats_answers"] == 32 and stats["reward_stats_train_answers"] == 26
    assert not evaluation.report["baselines"]["untrained base model"]["sampled"]  # 6 pairs <= 100: all of them
