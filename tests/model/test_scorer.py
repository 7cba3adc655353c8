"""The scoring engine (`RewardScorer`): batched scores equal the Quick Start's, in input order, on every path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PAIRS, REPO

from pipeline.model.batching import plan_batches
from pipeline.model.scorer import RewardScorer


def test_fp32_scores_equal_the_quick_start_in_input_order(tiny_model_dir: Path, reference: np.ndarray) -> None:
    # Small batches force several length-sorted, padded batches; the order of the scores must still be the input's.
    scorer = RewardScorer.from_pretrained(tiny_model_dir, max_tokens=64, batch_size=3, device="cpu")
    assert scorer.precision == "fp32"
    encoded = scorer.encode(*zip(*PAIRS, strict=True))
    assert [len(x) for x in encoded.input_ids][4] == 512 and encoded.truncated[4]
    scores = scorer.score_pairs(PAIRS)
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)
    assert float(scorer(*PAIRS[2])) == pytest.approx(reference[2], abs=1e-4)
    np.testing.assert_allclose(scorer.score_pairs(PAIRS[::-1]), reference[::-1], atol=1e-4, rtol=0)


def test_chunked_scoring_keeps_order_and_counts_every_row(tiny_model_dir: Path, reference, monkeypatch) -> None:
    # Chunks are encoded one ahead of the scores being collected (the GPU pipeline); the CPU runs the same path.
    scorer = RewardScorer.from_pretrained(tiny_model_dir, max_tokens=64, batch_size=2, device="cpu")
    scorer.chunk_size = 3
    counted = []

    class Bar:
        def __init__(self, **kwargs) -> None:
            pass

        def update(self, k: int) -> None:
            counted.append(k)

        def close(self) -> None:
            pass

    monkeypatch.setattr("pipeline.model.scorer.tqdm", Bar)
    scores, truncated = scorer.score(*zip(*PAIRS, strict=True), return_truncated=True)
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)
    assert truncated.tolist() == [i == 4 for i in range(len(PAIRS))]
    assert sum(counted) == len(PAIRS)


def test_bf16_is_close_and_batches_cover_every_sequence(tiny_model_dir: Path, reference: np.ndarray) -> None:
    scorer = RewardScorer.from_pretrained(tiny_model_dir, precision="bf16", device="cpu")
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=0.05, rtol=0)
    batches = plan_batches([5, 512, 7, 7, 300, 1], max_tokens=600, max_batch=2)
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert all(len(b) * max([5, 512, 7, 7, 300, 1][i] for i in b) <= 600 or len(b) == 1 for b in batches)


def test_auto_precision_on_cpu_and_an_fp16_overflow_is_redone_in_fp32(tiny_model_dir: Path, reference, monkeypatch):
    # auto: bf16 only on CPUs that multiply bf16 in hardware (elsewhere it is emulated and slower than fp32).
    monkeypatch.setattr("pipeline.model.scorer.cpu_has_native_bf16", lambda: False)
    assert RewardScorer.from_pretrained(tiny_model_dir, precision="auto", device="cpu").precision == "fp32"
    monkeypatch.setattr("pipeline.model.scorer.cpu_has_native_bf16", lambda: True)
    assert RewardScorer.from_pretrained(tiny_model_dir, precision="auto", device="cpu").precision == "bf16"
    scorer = RewardScorer.from_pretrained(tiny_model_dir, precision="fp16", device="cpu")
    logits = scorer._logits
    overflowed = []

    def overflowing(*args):
        out = logits(*args)
        if torch.is_autocast_enabled("cpu"):
            overflowed.append(len(out))
            out = torch.full_like(out, float("inf"))
        return out

    scorer._logits = overflowing
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-4, rtol=0)
    assert sum(overflowed) == len(PAIRS)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_last_layer_on_the_first_token_only_gives_the_same_scores(tiny_model_dir: Path, reference, attention) -> None:
    # DistilBERT's head reads the first token alone, so the scorer runs the last layer for that token only.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation=attention)
    scorer = RewardScorer(model, AutoTokenizer.from_pretrained(tiny_model_dir), max_tokens=64, batch_size=3)
    assert scorer._first_token
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-5, rtol=0)


def test_other_models_and_a_failed_check_use_the_model_forward(tiny_model_dir: Path, reference, monkeypatch, caplog):
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=0)  # fmt: skip
    bert = BertForSequenceClassification(config).eval()
    scorer = RewardScorer(bert, tokenizer, batch_size=3, device="cpu")
    assert not scorer._first_token
    expected = []
    for prompt, response in PAIRS:
        with torch.no_grad():
            inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=512)
            expected.append(bert(**inputs).logits.item())
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), expected, atol=1e-4, rtol=0)

    # A transformers release whose block no longer matches: the check at start-up falls back, with a warning.
    monkeypatch.setattr("pipeline.model.first_token._first_token_block", lambda block, hidden, *args: hidden[:, :1])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with caplog.at_level("WARNING", logger="pipeline.model.first_token"):
        scorer = RewardScorer(model, tokenizer, batch_size=3, device="cpu")
    assert not scorer._first_token and "full forward" in caplog.text
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-4, rtol=0)


def test_first_token_falls_back_when_it_raises_and_handles_chunked_feed_forward(
    tiny_model_dir: Path, reference, monkeypatch, caplog
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.model.first_token import first_token_logits

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Feed-forward chunking needs a length divisible by the chunk size (the model's own forward fails otherwise);
    # the first-token block (length 1) runs the feed-forward unchunked.
    chunked = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, chunk_size_feed_forward=4).eval()
    ids = torch.arange(16).view(2, 8) % chunked.config.vocab_size
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.inference_mode():
        expected = chunked(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(first_token_logits(chunked)(ids, mask), expected, atol=1e-5, rtol=0)
    # Asked not to: the model's own forward.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    scorer = RewardScorer(model, tokenizer, batch_size=3, device="cpu", first_token_only=False)
    assert not scorer._first_token
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-5, rtol=0)

    # A transformers release whose internals moved (a missing function or keyword): a warning and the forward.
    def moved(*args):
        raise AttributeError("'AttentionInterface' object has no attribute 'get_interface'")

    monkeypatch.setattr("pipeline.model.first_token._first_token_block", moved)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with caplog.at_level("WARNING", logger="pipeline.model.first_token"):
        scorer = RewardScorer(model, tokenizer, batch_size=3, device="cpu")
    assert not scorer._first_token and "failed (AttributeError" in caplog.text
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-4, rtol=0)


def test_under_autocast_the_last_layer_first_token_and_the_head_run_in_fp32(tiny_model_dir: Path, reference) -> None:
    # Their rounding would land directly on the score; they cost one token per sequence. The rest runs in bf16.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    scorer = RewardScorer(model, AutoTokenizer.from_pretrained(tiny_model_dir), precision="bf16", device="cpu")
    assert scorer._first_token
    *layers, last = model.distilbert.transformer.layer
    watched = {
        "first layer feed-forward": layers[0].ffn.lin1,
        "last layer keys": last.attention.k_lin,
        "last layer queries": last.attention.q_lin,
        "last layer feed-forward": last.ffn.lin2,
        "head": model.classifier,
    }
    dtypes = {}
    for name, module in watched.items():
        module.register_forward_hook(lambda module, args, output, name=name: dtypes.update({name: output.dtype}))
    scores = scorer.score_pairs(PAIRS)
    assert dtypes == {
        "first layer feed-forward": torch.bfloat16,
        "last layer keys": torch.bfloat16,
        "last layer queries": torch.float32,
        "last layer feed-forward": torch.float32,
        "head": torch.float32,
    }
    np.testing.assert_allclose(scores, reference, atol=0.05, rtol=0)


def test_first_token_is_not_used_on_a_wrapped_or_hooked_model(tiny_model_dir: Path) -> None:
    # After mixed-precision training Accelerate leaves an autocast-wrapped forward on the instance; a hook (device
    # maps, offloading) adds work too: scoring the modules directly would skip it, so these keep their forward.
    from transformers import AutoModelForSequenceClassification

    from pipeline.model.first_token import first_token_logits

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    assert first_token_logits(model) is not None
    model._original_forward = model.forward
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    assert first_token_logits(model) is None
    hooked = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    hooked.distilbert.transformer.register_forward_hook(lambda module, args, output: None)
    assert first_token_logits(hooked) is None


def test_standardised_scores_use_the_stored_reward_statistics(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "with-stats"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "reward_mean": 0.25, "reward_std": 2.0}))
    scorer = RewardScorer.from_pretrained(model_dir)
    assert scorer.reward_stats == (0.25, 2.0)
    raw = scorer.score_pairs(PAIRS[:3])
    np.testing.assert_allclose(scorer.score_pairs(PAIRS[:3], standardize=True), (raw - 0.25) / 2.0)
    assert RewardScorer.from_pretrained(tiny_model_dir).reward_stats is None


def test_scoring_needs_only_transformers(tiny_model_dir: Path) -> None:
    # The scorer runs where only torch and transformers are installed (a bare GPU image, a serving container).
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("datasets", "evaluate", "trl"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from pipeline.model.scorer import RewardScorer
scorer = RewardScorer.from_pretrained({str(tiny_model_dir)!r}, device="cpu")
print(scorer.score(["why is the sky blue"], ["because of light"])[0])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.isfinite(float(done.stdout.strip().splitlines()[-1]))


def test_masks_are_known_on_the_host_so_a_gpu_never_waits(tiny_model_dir: Path, reference, monkeypatch) -> None:
    # transformers decides whether SDPA may skip a 2D mask by reading it back (`mask.all()`), which on a GPU waits
    # for every batch queued before; the scorer passes no mask for unpadded batches and a 4D one otherwise.
    import transformers.masking_utils as masking

    checks = []
    original = masking._ignore_bidirectional_mask_sdpa

    def counted(padding_mask, *args, **kwargs):
        if padding_mask is not None:  # None (no mask) is decided without reading anything
            checks.append(1)
        return original(padding_mask, *args, **kwargs)

    monkeypatch.setattr(masking, "_ignore_bidirectional_mask_sdpa", counted)
    scorer = RewardScorer.from_pretrained(tiny_model_dir, max_tokens=64, batch_size=3, device="cpu")
    assert scorer._mask_4d  # DistilBERT under SDPA
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-4, rtol=0)
    assert not checks
    scorer._mask_4d = False  # the 2D mask gives the same scores, through transformers' own check
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), reference, atol=1e-4, rtol=0)
    assert checks
