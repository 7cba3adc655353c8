"""Ranking objective: equals TRL's pairwise loss at K=2, hand-checked at K=3, ties form no pair; it trains. The
length-chunked CPU forward gives the same rewards and gradients."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.model.encoding import encode_preference_pairs
from pipeline.training.examples import GroupCollator, group_ranks, ranking_dataset
from pipeline.training.loss import group_ranking_loss


def trl_pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    # RewardTrainer.compute_loss (trl 1.16), verbatim in effect.
    if margin is not None:
        return -F.logsigmoid(chosen - rejected - margin).mean()
    return -F.logsigmoid(chosen - rejected).mean()


@pytest.mark.parametrize("use_margin", [False, True])
def test_k2_equals_trl_pairwise_loss(use_margin: bool) -> None:
    torch.manual_seed(0)
    chosen, rejected = torch.randn(7), torch.randn(7)
    gaps = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0])
    # Interleave groups of two: [c0, r0, c1, r1, ...]
    rewards = torch.stack([chosen, rejected], dim=1).reshape(-1)
    ranks = torch.stack([torch.ones(7), 1.0 + gaps], dim=1).reshape(-1)
    group = torch.arange(7).repeat_interleave(2)
    ours, n_pairs, n_correct = group_ranking_loss(rewards, ranks, group, use_margin=use_margin)
    expected = trl_pairwise_loss(chosen, rejected, gaps if use_margin else None)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert n_pairs.item() == 7 and n_correct.item() == int((chosen > rejected).sum())


def test_k3_group_mean_then_mean_over_groups_by_hand() -> None:
    # Group 0: three answers ranked 1, 2, 3 with rewards 2, 0, 1. Group 1: one pair, rewards 0 (rank 1) and 1.
    rewards = torch.tensor([2.0, 0.0, 1.0, 0.0, 1.0])
    ranks = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0])
    group = torch.tensor([0, 0, 0, 1, 1])
    loss, n_pairs, n_correct = group_ranking_loss(rewards, ranks, group)

    def nls(x: float) -> float:
        return math.log1p(math.exp(-x))  # -log sigmoid(x)

    group0 = (nls(2 - 0) + nls(2 - 1) + nls(0 - 1)) / 3
    group1 = nls(0 - 1)
    assert loss.item() == pytest.approx((group0 + group1) / 2, abs=1e-6)
    assert n_pairs.item() == 4 and n_correct.item() == 2


def test_ties_form_no_pair() -> None:
    rewards = torch.tensor([0.5, 3.0, -1.0])
    ranks = torch.tensor([1.0, 1.0, 2.0])  # the first two are tied
    loss, n_pairs, _ = group_ranking_loss(rewards, ranks, torch.zeros(3, dtype=torch.long))
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-4.0))) / 2
    assert n_pairs.item() == 2 and loss.item() == pytest.approx(expected, abs=1e-6)


def test_groups_rebuild_ranks_and_encode_each_answer_once(tiny_tokenizer) -> None:
    pairs = pd.DataFrame(
        {
            "prompt": ["p"] * 6 + ["q"],
            "chosen": ["a", "a", "a", "b", "b", "c", "x"],
            "rejected": ["b", "c", "d", "c", "d", "d", "y"],
            "margin": [1.0, 2.0, 3.0, 1.0, 2.0, 1.0, 1.0],
        }
    )
    encoded = encode_preference_pairs(tiny_tokenizer, pairs, max_length=64)
    groups, ranks = group_ranks(pairs, encoded)
    assert [len(g) for g in groups] == [4, 2] and ranks == [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]
    dataset = ranking_dataset(pairs, encoded)
    assert sum(len(x) for x in dataset["answer_ids"]) == 6  # 6 sequences instead of 2 x 7 = 14
    batch = GroupCollator(pad_token_id=0)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[0] == 6 and batch["group"].tolist() == [0, 0, 0, 0, 1, 1]


def test_inconsistent_pairs_fall_back_to_one_group_per_pair(tiny_tokenizer) -> None:
    # A cycle a>b, b>c, c>a is no ranking: each pair is its own group (the pairwise objective).
    pairs = pd.DataFrame(
        {"prompt": ["p"] * 3, "chosen": ["a", "b", "c"], "rejected": ["b", "c", "a"], "margin": [1.0] * 3}
    )
    encoded = encode_preference_pairs(tiny_tokenizer, pairs, max_length=64)
    groups, ranks = group_ranks(pairs, encoded)
    assert len(groups) == 3 and all(r == [1.0, 2.0] for r in ranks)


def test_ranking_trainer_trains(tiny_model_dir, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training.objectives import RankingRewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = pd.DataFrame(
        {
            "prompt": ["why"] * 3 + ["how"] * 3,
            "chosen": ["because light", "because light", "no", "boil water", "boil water", "fry"],
            "rejected": ["no", "bad", "bad", "fry", "cook it raw", "cook it raw"],
            "margin": [1.0, 2.0, 1.0, 1.0, 2.0, 1.0],
        }
    )
    dataset = ranking_dataset(pairs, encode_preference_pairs(tokenizer, pairs, max_length=64))
    args = PipelineRewardConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                                learning_rate=1e-2, logging_steps=1, report_to="none", disable_tqdm=True)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=GroupCollator(tokenizer.pad_token_id))  # fmt: skip
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all("tokens_per_s" in entry for entry in logged[1:])


def test_length_chunked_forward_gives_the_same_rewards_and_gradients(tiny_model_dir) -> None:
    from transformers import AutoModelForSequenceClassification

    from pipeline.training.chunked_forward import LengthChunkedForward

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 120, 7, 118, 60, 6, 119, 61]  # mixed lengths: several pieces
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 60, (n,), generator=generator)
        mask[row, :n] = 1

    def rewards_and_grads(forward) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        rewards = forward(input_ids=ids, attention_mask=mask).logits[:, 0]
        (rewards * torch.arange(1.0, len(lengths) + 1)).sum().backward()  # order-sensitive: catches a shuffle
        return rewards.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, whole_grads = rewards_and_grads(model)
    pieces, piece_grads = rewards_and_grads(LengthChunkedForward(model))
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)
    for a, b in zip(piece_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_data_seed_sets_the_batch_order_apart_from_seed(tiny_model_dir, tmp_path) -> None:
    """transformers' `data_seed` is the samplers' seed: runs sharing `seed` (the head's initialisation) but not
    `data_seed` see their pairs in different orders; without `data_seed` the order follows `seed`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training import PairwiseRewardTrainer, pairwise_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = "water light air sun sea boil fry cook pan oil salt heat".split()
    pairs = pd.DataFrame({"prompt": [f"q{i}" for i in range(24)],
                          "chosen": [" ".join(words[: 2 + i % 9]) for i in range(24)],
                          "rejected": [" ".join(words[: 1 + i % 5]) for i in range(24)]})  # fmt: skip
    dataset = pairwise_dataset(encode_preference_pairs(tokenizer, pairs, 64), None)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)

    def order(seed: int, data_seed: int | None = None) -> list[int]:
        args = PipelineRewardConfig(output_dir=str(tmp_path), report_to="none", seed=seed, data_seed=data_seed,
                                    per_device_train_batch_size=2, bf16=False)  # fmt: skip
        trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        return list(trainer._get_train_sampler())

    assert order(1, data_seed=7) == order(2, data_seed=7)
    assert order(1, data_seed=7) != order(1, data_seed=8)
    assert order(3) == order(1, data_seed=3)
