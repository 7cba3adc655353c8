"""Length control: the answer lengths the penalty reads, the batch correlation, the penalty in both objectives' loss,
and that it takes the length out of a model trained on data where length alone decides; the length expert's fit and
its place in both objectives' training loss (and nowhere else)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model.encoding import encode_preference_pairs
from pipeline.training.examples import GroupCollator, pairwise_dataset, ranking_dataset
from pipeline.training.loss import (
    answer_lengths,
    batch_correlation,
    fit_length_expert,
    group_ranking_loss,
    length_slope,
)


def padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def test_answer_lengths_count_the_answer_tokens_only(tiny_tokenizer) -> None:
    prompts = ["why is the sky blue", "hi"]
    answers = ["light", "because of the way air scatters blue light"]
    rows = [tiny_tokenizer(p, a)["input_ids"] for p, a in zip(prompts, answers, strict=True)]
    ids, mask = padded(rows, tiny_tokenizer.pad_token_id)
    expected = [len(tiny_tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    assert answer_lengths(ids, mask, tiny_tokenizer.sep_token_id).tolist() == expected
    # No [SEP] known: the row's length stands in.
    assert answer_lengths(ids, mask, None).tolist() == [len(r) for r in rows]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-50, 50), st.integers(1, 400)), min_size=3, max_size=40),
    st.floats(0.1, 10),
    st.floats(-5, 5),
)
def test_batch_correlation_is_pearsons_and_ignores_scale(pairs, scale, shift) -> None:
    values = torch.tensor([v for v, _ in pairs], dtype=torch.float64)
    lengths = torch.tensor([n for _, n in pairs], dtype=torch.float64)
    r = batch_correlation(values, lengths).item()
    assert -1 - 1e-9 <= r <= 1 + 1e-9
    if values.std() > 1e-3 and lengths.std() > 1e-3:
        assert r == pytest.approx(np.corrcoef(values.numpy(), lengths.numpy())[0, 1], abs=1e-9)
        assert batch_correlation(values * scale + shift, lengths).item() == pytest.approx(r, abs=1e-9)


def test_length_slope_is_the_covariance_with_standardised_length() -> None:
    values, lengths = torch.tensor([1.0, 2.0, 4.0, 3.0]), torch.tensor([10.0, 30.0, 20.0, 40.0])
    z = (lengths - lengths.mean()) / lengths.std(unbiased=False)
    assert length_slope(values, lengths).item() == pytest.approx(float(np.cov(values, z, bias=True)[0, 1]), abs=1e-6)
    assert length_slope(values * 3, lengths).item() == pytest.approx(3 * length_slope(values, lengths).item())
    assert length_slope(values, torch.full((4,), 7.0)).item() == 0.0


def test_batch_correlation_is_zero_with_a_finite_gradient_when_nothing_varies() -> None:
    values = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    r = batch_correlation(values, torch.tensor([3.0, 9.0, 4.0]))
    r.backward()
    assert r.item() == 0.0 and torch.isfinite(values.grad).all()
    assert batch_correlation(torch.tensor([1.0, 2.0]), torch.tensor([7.0, 7.0])).item() == 0.0


PAIRS = pd.DataFrame(
    {
        "prompt": ["why", "why", "how", "how"],
        "chosen": ["because light scatters in air", "light", "boil the water for nine minutes", "boil it"],
        "rejected": ["no", "because of the sun and the sea", "fry", "fry it in a pan with some oil"],
        "margin": [1.0, 1.0, 1.0, 1.0],
    }
)


def trainer_for(
    objective: str,
    tiny_model_dir,
    tmp_path,
    penalty: float,
    pairs: pd.DataFrame = PAIRS,
    expert: float = 0.0,
    **overrides,
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training.objectives import PairwiseRewardTrainer, RankingRewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoded = encode_preference_pairs(tokenizer, pairs, max_length=64)
    args = PipelineRewardConfig(output_dir=str(tmp_path), report_to="none", disable_tqdm=True, bf16=False,
                                save_strategy="no", length_bias_penalty=penalty, **overrides)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    if objective == "ranking":
        collator = GroupCollator(tokenizer.pad_token_id)
        return RankingRewardTrainer(model=model, args=args, train_dataset=ranking_dataset(pairs, encoded),
                                    processing_class=tokenizer, data_collator=collator,
                                    length_expert_weight=expert)  # fmt: skip
    return PairwiseRewardTrainer(model=model, args=args, train_dataset=pairwise_dataset(encoded, None),
                                 processing_class=tokenizer, length_expert_weight=expert)  # fmt: skip


@pytest.mark.parametrize("objective", ["pairwise", "ranking"])
def test_penalty_adds_weight_times_squared_correlation_to_the_objectives_loss(
    objective: str, tiny_model_dir, tmp_path
) -> None:
    trainer = trainer_for(objective, tiny_model_dir, tmp_path, penalty=2.5, max_steps=1)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()  # no dropout: the same rewards twice
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    lengths = answer_lengths(batch["input_ids"], batch["attention_mask"], trainer.processing_class.sep_token_id)
    if objective == "ranking":
        base = group_ranking_loss(rewards, batch["ranks"], batch["group"])[0]
    else:
        chosen, rejected = rewards.chunk(2)
        base = -F.logsigmoid(chosen - rejected).mean()
    expected = base + 2.5 * length_slope(rewards, lengths) ** 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    assert trainer._metrics["eval"]["length_correlation"]  # logged, penalty or not


def test_penalty_takes_length_out_of_a_model_trained_where_length_decides(tiny_model_dir, tmp_path) -> None:
    """Chosen answers are always the longer ones: the plain model learns length; with the penalty, rewards on new
    answers correlate with length far less."""
    from transformers import AutoTokenizer

    rng = np.random.default_rng(0)
    words = "water light air sun sea boil fry cook pan oil salt heat cold blue red".split()
    rows = []
    for i in range(48):
        short, long = (" ".join(rng.choice(words, n)) for n in (int(rng.integers(2, 6)), int(rng.integers(8, 14))))
        rows.append((f"question {i}", long, short))
    pairs = pd.DataFrame(rows, columns=["prompt", "chosen", "rejected"]).assign(margin=1.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = [" ".join(rng.choice(words, int(n))) for n in rng.integers(2, 14, 40)]
    ids, mask = padded([tokenizer("question x", a)["input_ids"] for a in answers], tokenizer.pad_token_id)
    lengths = answer_lengths(ids, mask, tokenizer.sep_token_id)

    def correlation_after_training(penalty: float) -> float:
        folder = tmp_path / str(penalty)
        trainer = trainer_for("pairwise", tiny_model_dir, folder, penalty, pairs, num_train_epochs=4,
                              per_device_train_batch_size=8, learning_rate=3e-3, seed=0)  # fmt: skip
        trainer.train()
        with torch.no_grad():
            rewards = trainer.model.eval()(input_ids=ids, attention_mask=mask).logits[:, 0]
        return abs(batch_correlation(rewards, lengths).item())

    plain, controlled = correlation_after_training(0.0), correlation_after_training(300.0)
    print(f"|correlation| plain {plain:.3f}, with the penalty {controlled:.3f}")
    assert plain > 0.5  # the plain model did learn "longer wins"
    assert controlled < plain / 2


def test_the_length_expert_recovers_the_length_preference_of_the_pairs() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(5, 300, 20000), rng.integers(5, 300, 20000)
    d = np.log1p(a) - np.log1p(b)
    a_wins = rng.random(20000) < 1 / (1 + np.exp(-1.5 * d))  # shorter loses: weight 1.5
    better, worse = np.where(a_wins, a, b), np.where(a_wins, b, a)
    assert fit_length_expert(better, worse) == pytest.approx(1.5, abs=0.1)
    assert fit_length_expert(worse, better) == pytest.approx(-1.5, abs=0.1)  # shorter wins: negative
    assert fit_length_expert(np.full(10, 7), np.full(10, 7)) == 0.0  # no length signal: no expert
    separable = fit_length_expert(np.array([20, 30, 40]), np.array([2, 3, 4]))  # longer always wins
    assert 0 < separable < 10 and np.isfinite(separable)


@pytest.mark.parametrize("objective", ["pairwise", "ranking"])
def test_the_length_expert_joins_the_training_loss_only(objective: str, tiny_model_dir, tmp_path) -> None:
    """Training: the loss is the product of experts' (rewards + weight x log(1 + answer tokens)); evaluation and
    the logged accuracy see the model alone."""
    trainer = trainer_for(objective, tiny_model_dir, tmp_path, penalty=0.0, expert=0.7, max_steps=1)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    for module in model.modules():  # train mode without dropout: the same rewards on every call
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    lengths = answer_lengths(batch["input_ids"], batch["attention_mask"], trainer.processing_class.sep_token_id)
    offsets = 0.7 * torch.log1p(lengths)
    with torch.no_grad():
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
        losses = {}
        for mode in ("train", "eval"):
            model.train(mode == "train")
            losses[mode] = trainer.compute_loss(model, dict(batch))
    if objective == "ranking":
        alone = group_ranking_loss(rewards, batch["ranks"], batch["group"])[0]
        joint = group_ranking_loss(rewards, batch["ranks"], batch["group"], offsets=offsets)[0]
    else:
        chosen, rejected = rewards.chunk(2)
        expert_chosen, expert_rejected = offsets.chunk(2)
        alone = -F.logsigmoid(chosen - rejected).mean()
        joint = -F.logsigmoid(chosen - rejected + expert_chosen - expert_rejected).mean()
    assert not torch.isclose(alone, joint)  # the batch's lengths differ: the expert matters
    torch.testing.assert_close(losses["train"], joint, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses["eval"], alone, atol=1e-5, rtol=0)


def test_the_ranking_accuracy_counts_the_rewards_alone() -> None:
    rewards = torch.tensor([0.0, 1.0])  # answer 0 is ranked better but scores lower
    ranks, group = torch.tensor([1, 2]), torch.tensor([0, 0])
    _, pairs, correct = group_ranking_loss(rewards, ranks, group, offsets=torch.tensor([5.0, 0.0]))
    assert (pairs.item(), correct.item()) == (1, 0)
