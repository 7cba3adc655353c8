"""The training precision a run picks and the one line it prints about it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.core import precision
from pipeline.training import run


@pytest.mark.parametrize(
    ("bf16", "native", "expected"),
    [
        (True, True, "bf16 autocast (CPU with AVX512-BF16/AMX)"),
        (True, False, "bf16 autocast, emulated (no bf16 here; fp32 may be faster)"),
        (False, True, "fp32 (bf16 would be native here: CPU with AVX512-BF16/AMX; bf16: auto uses it)"),
        (False, False, "fp32 (no bf16 here)"),
    ],
)
def test_the_precision_line_says_what_runs_and_why(monkeypatch, bf16: bool, native: bool, expected: str) -> None:
    where = "CPU with AVX512-BF16/AMX" if native else "no bf16 here"
    monkeypatch.setattr(run, "native_bf16", lambda use_cpu: (native, where))
    args = SimpleNamespace(bf16=bf16, fp16=False, device=torch.device("cpu"))
    assert run.precision_line(args) == expected


def test_native_bf16_follows_the_cpu_when_there_is_no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    for has in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda has=has: has)
        assert precision.native_bf16()[0] is has


def test_attention_under_cpu_autocast_is_fp32_sdpa_rounded_once() -> None:
    """The training attention gives fp32 SDPA's result (rounded to the inputs' dtype once), masks included."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from pipeline.training.attention import sdpa_fp32_on_cpu

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8, generator=generator).to(torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False  # the second row's last two tokens are padding
    module = torch.nn.Module()
    module.is_causal, module.training = False, True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = sdpa_fp32_on_cpu(module, q, k, v, mask, dropout=0.0, scaling=None)
    expected, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), mask, dropout=0.0, scaling=None)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected.to(torch.bfloat16))
    fp32, _ = sdpa_fp32_on_cpu(module, q.float(), k.float(), v.float(), mask, dropout=0.0, scaling=None)
    assert torch.equal(fp32, expected)  # fp32 inputs: plain SDPA


def test_bf16_training_on_cpu_uses_fp32_attention_and_restores_sdpa(tiny_model_dir, tmp_path) -> None:
    """During the loop the model's attention is the fp32 one, padding still masked; afterwards it is SDPA again
    (the scorer's first-token path and a reloaded model both expect SDPA)."""
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    from pipeline.model.encoding import encode_preference_pairs
    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training import PairwiseRewardTrainer, pairwise_dataset
    from pipeline.training.attention import NAME

    seen: list[tuple[str, float]] = []
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("why is the sky blue", "because air scatters blue light more")["input_ids"]

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            alone = torch.tensor([ids])
            padded = torch.tensor([ids + [tokenizer.pad_token_id] * 5])
            mask = torch.tensor([[1] * len(ids) + [0] * 5])
            encoder = model.distilbert  # fp32 hidden states: the model's own forward is autocast-wrapped here
            with torch.no_grad():
                gap = encoder(alone).last_hidden_state - encoder(padded, mask).last_hidden_state[:, : len(ids)]
            seen.append((model.config._attn_implementation, gap.abs().max().item()))

    pairs = pd.DataFrame({"prompt": ["why", "how"], "chosen": ["because", "boil it"], "rejected": ["no", "fry"]})
    args = PipelineRewardConfig(output_dir=str(tmp_path), max_steps=2, bf16=True, use_cpu=True, report_to="none",
                                disable_tqdm=True, save_strategy="no", per_device_train_batch_size=1)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    dataset = pairwise_dataset(encode_preference_pairs(tokenizer, pairs, 32), None)
    trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                    callbacks=[Watch()])  # fmt: skip
    trainer.train()
    assert [name for name, _ in seen] == [NAME, NAME]
    assert max(gap for _, gap in seen) < 1e-5  # the padding is masked
    assert model.config._attn_implementation == "sdpa"
    assert "attn_implementation" not in model.config.to_json_string()
