"""`python -m pipeline.evaluation` on any one-label model; bad models are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, build_tiny_model

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.evaluation", *args], cwd=REPO, capture_output=True,
                          text=True, env=ENV)  # fmt: skip


@pytest.fixture(scope="module")
def ranked_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "ranked.csv"
    path.write_text(
        "prompt,answer,rank\n"
        + "".join(f"why is the sky blue {i},because of light {i},1\nwhy is the sky blue {i},no,2\n" for i in range(4))
        + "how to cook pasta,boil water then add salt,1\nhow to cook pasta,no idea,2\nhow to cook pasta,fry it,3\n"
    )
    return path


def test_report_for_any_one_label_model(tiny_model_dir: Path, ranked_file: Path, tmp_path: Path) -> None:
    result = run("--model", str(tiny_model_dir), "--data", str(ranked_file), "--output", str(tmp_path),
                 "--base_model", str(tiny_model_dir))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert printed["num_pairs"] == 4 + 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The "untrained base" here is the same model: identical numbers.
    assert summary["baselines"]["untrained base model"]["num_correct"] == summary["model"]["num_correct"]
    assert summary["model"]["prompts_with_more_than_2_answers"] == 1
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "| reward model |" in (tmp_path / "report.md").read_text()


def test_model_with_two_labels_is_refused(tmp_path: Path, ranked_file: Path) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = build_tiny_model(tmp_path / "two")
    config = AutoConfig.from_pretrained(model_dir, num_labels=2)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)  # a 2-class classifier
    result = run("--model", str(model_dir), "--data", str(ranked_file))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("num_labels=2; a reward model has 1")


def test_model_without_tokenizer_is_refused(tmp_path: Path, tiny_model_dir: Path, ranked_file: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_model_dir / name).read_bytes())
    result = run("--model", str(bare), "--data", str(ranked_file))
    assert result.returncode == 2
    assert "cannot load a tokenizer" in result.stderr and "Traceback" not in result.stderr


def test_evaluation_scores_equal_the_model_forward_one_sequence_at_a_time(tiny_model_dir: Path, monkeypatch) -> None:
    # Evaluation scores the model it holds in place through the scoring engine, with the first-token last layer (fp32
    # DistilBERT); a bf16 model keeps its own forward and its dtype.
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.model import first_token
    from pipeline.model.first_token import check
    from pipeline.model.scorer import RewardScorer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    texts = ["why is the sky blue", "because of light", "once upon a time a city by the water", "fry it", "a"]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([x])).logits.item() for x in ids]
    checked = []

    def recording_check(model, logits, input_ids, attention_mask):
        assert not attention_mask.all()  # checked on a batch with padding
        checked.append(check(model, logits, input_ids, attention_mask))
        return checked[-1]

    def in_place(model):
        return RewardScorer(model, tokenizer, device=None, batch_size=2)

    monkeypatch.setattr(first_token, "check", recording_check)
    np.testing.assert_allclose(in_place(model).score_ids(ids), expected, atol=1e-5)
    assert checked == [True]  # the fast path was taken, checked once, and passed
    half_model = model.to(torch.bfloat16)
    half = in_place(half_model).score_ids(ids)
    assert checked == [True] and np.abs(half - np.asarray(expected)).max() < 0.1
    assert next(half_model.parameters()).dtype == torch.bfloat16  # scored in place: not cast


def test_mistyped_model_is_one_line_before_any_hub_request(ranked_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Online, the data_report.json look-up used to retry the Hub for half a minute before the missing folder was named.
    from pipeline.evaluation import cli

    def no_hub(model: str) -> None:
        raise AssertionError(f"the Hub was asked for {model}'s data_report.json before the model was located")

    monkeypatch.setattr(cli, "model_data_report", no_hub)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", "my_modle", "--data", str(ranked_file)])
    assert exit_info.value.code == 2
