"""The CUDA paths (run by bench/gpu_check.sh on a GPU; skipped elsewhere): training in bf16, the scoring engine and
its first-token path under fp16/bf16, the RL reward function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PAIRS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_bf16_training_step_on_cuda(tiny_model_dir: Path, tiny_tokenizer, tmp_path: Path) -> None:
    import pandas as pd
    from transformers import AutoModelForSequenceClassification

    from pipeline.model.encoding import encode_preference_pairs
    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training import PairwiseRewardTrainer, pairwise_dataset

    pairs = pd.DataFrame({"prompt": [p for p, _ in PAIRS], "chosen": [r for _, r in PAIRS],
                          "rejected": [r for _, r in PAIRS[::-1]]})  # fmt: skip
    pairs = pairs[pairs.chosen != pairs.rejected]
    dataset = pairwise_dataset(encode_preference_pairs(tiny_tokenizer, pairs, 512), None)
    args = PipelineRewardConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, bf16=True,
                                report_to="none", save_strategy="no", logging_steps=1)  # fmt: skip
    assert args.bf16 and args.device.type == "cuda"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    result = trainer.train()
    assert np.isfinite(result.training_loss)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "auto"])
def test_the_scorer_on_cuda_matches_fp32_on_cpu(tiny_model_dir: Path, reference, precision: str) -> None:
    from pipeline.model.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(tiny_model_dir, device="cuda", precision=precision, batch_size=3)
    assert scorer.device.type == "cuda" and scorer._first_token  # the first-token last layer under every precision
    scores = scorer.score_pairs(PAIRS)
    tolerance = 1e-4 if precision == "fp32" else 0.05
    np.testing.assert_allclose(scores, reference, atol=tolerance, rtol=0)


def test_the_reward_function_on_cuda(tiny_model_dir: Path, reference) -> None:
    from pipeline import RewardFunction

    reward = RewardFunction.from_pretrained(tiny_model_dir, device="cuda")
    prompts, completions = zip(*PAIRS, strict=True)
    np.testing.assert_allclose(reward(prompts=list(prompts), completions=list(completions)), reference, atol=1e-4)
