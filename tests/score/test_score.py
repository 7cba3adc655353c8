"""python -m pipeline.score: the output rows, columns and ranks, and its one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import PAIRS, REPO, build_tiny_model, quick_start, score_cli

from pipeline.score.cli import per_prompt_rank, prompt_keys


def test_per_prompt_rank_is_one_for_the_best() -> None:
    ranks = per_prompt_rank(prompt_keys(["a", "b", "a", "a", "b"]), np.array([0.1, 5.0, 0.3, -1.0, 6.0]))
    assert ranks.tolist() == [2, 2, 1, 3, 1]


def test_cli_writes_rows_in_order_with_scores_and_ranks(tiny_model_dir: Path, tmp_path: Path, reference) -> None:
    source = tmp_path / "answers.csv"
    frame = pd.DataFrame({"id": [f"0{i}" for i in range(len(PAIRS))], "prompt": [p for p, _ in PAIRS],
                          "answer": [r for _, r in PAIRS], "note": ["x", "", "1.50", "y", "z", "w", "v"]})  # fmt: skip
    frame.to_csv(source, index=False)
    target = tmp_path / "out" / "scored.csv"
    assert score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(target), "--rank") == 0
    out = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert list(out.columns) == ["id", "prompt", "answer", "note", "score", "score_rank"]
    assert out["id"].tolist() == frame["id"].tolist() and out["note"].tolist() == frame["note"].tolist()
    np.testing.assert_allclose(out["score"].astype(float), reference, atol=1e-4, rtol=0)
    ranks = out["score_rank"].astype(int).tolist()
    assert ranks == per_prompt_rank(prompt_keys(frame["prompt"].tolist()), reference).tolist()
    assert sorted(ranks[:2]) == [1, 2] and sorted([ranks[2], ranks[6]]) == [1, 2] and ranks[3] == 1


def test_python_m_cli_error_is_one_line_without_traceback(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "answers.csv"
    source.write_text("question,answer\nhi,hello\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "pipeline.score", "--model", str(tiny_model_dir), "--input",
                             str(source), "--output", str(tmp_path / "out.csv")],
                            cwd=REPO, capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {source}: missing column 'prompt' (found 'question', 'answer'); rename it in the file or pass "
        "--prompt_column / --response_column"
    ]


def test_cli_jsonl_keeps_values_and_standardises(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "with-stats"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "reward_mean": 1.0, "reward_std": 0.5}))
    source = tmp_path / "in.jsonl"
    records = [{"prompt": p, "response": r, "n": i, "meta": {"k": [i]}} for i, (p, r) in enumerate(PAIRS[:3])]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    target = tmp_path / "out.jsonl"
    assert score_cli("--model", str(model_dir), "--input", str(source), "--output", str(target), "--standardize") == 0
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert [{k: v for k, v in w.items() if k != "score"} for w in written] == records
    raw = quick_start(tiny_model_dir, PAIRS[:3])
    np.testing.assert_allclose([w["score"] for w in written], (raw - 1.0) / 0.5, atol=1e-3)
    # The same model without statistics: --standardize is a one-line error.
    code = score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(target), "--standardize")
    assert code == 2 and "reward_mean" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_its_input(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "answers.csv"
    source.write_text("prompt,response\nhi,hello\n")
    before = source.read_bytes()
    code = score_cli(
        "--model", str(tiny_model_dir), "--input", str(source), "--output", str(tmp_path / "." / source.name)
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "refusing to overwrite" in err
    assert source.read_bytes() == before


def two_label_model(tmp_path: Path) -> Path:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = build_tiny_model(tmp_path / "two")
    config = AutoConfig.from_pretrained(model_dir, num_labels=2)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    return model_dir


def bare_model(tmp_path: Path, tiny_model_dir: Path) -> Path:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, bare / name)
    return bare


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing column", "missing column 'response (or answer)'"),
        ("empty file", "the file is empty"),
        ("header only", "no rows to score"),
        ("no tokenizer", "cannot load a tokenizer"),
        ("two labels", "num_labels=2; a reward model has 1"),
        ("bad output suffix", "unknown format '.xlsx'"),
    ],
)
def test_bad_input_is_one_error_line_exit_2(case, expected, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source, model, output = tmp_path / "in.csv", tiny_model_dir, tmp_path / "out.csv"
    source.write_text("prompt,response\nhi,hello\n")
    if case == "missing column":
        source.write_text("prompt,reply\nhi,hello\n")
    elif case == "empty file":
        source.write_text("")
    elif case == "header only":
        source.write_text("prompt,response\n")
    elif case == "no tokenizer":
        model = bare_model(tmp_path, tiny_model_dir)
    elif case == "two labels":
        model = two_label_model(tmp_path)
    elif case == "bad output suffix":
        output = tmp_path / "out.xlsx"
    code = score_cli("--model", str(model), "--input", str(source), "--output", str(output))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not output.exists()


def test_cli_scores_conversational_rows_as_their_rendered_text(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    # TRL's conversational messages, in JSONL and Parquet, score as the HH text training renders them to.
    prompt = [{"role": "user", "content": "why is the sky blue"}]
    response = [{"role": "assistant", "content": "because of light"}]
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"prompt": ["Human: why is the sky blue"], "response": ["because of light"]}).to_csv(
        plain, index=False
    )
    assert score_cli("--model", str(tiny_model_dir), "--input", str(plain), "--output", str(tmp_path / "p.jsonl")) == 0
    expected = json.loads((tmp_path / "p.jsonl").read_text())["score"]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": prompt, "response": response}) + "\n")
    pd.DataFrame({"prompt": [prompt], "response": [response]}).to_parquet(tmp_path / "chat.parquet")
    for source in (chat, tmp_path / "chat.parquet"):
        out = tmp_path / f"{source.suffix[1:]}-scored.jsonl"
        assert score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(out)) == 0
        written = json.loads(out.read_text())
        assert written["score"] == pytest.approx(expected, abs=1e-6)
        assert written["prompt"] == prompt and written["response"] == response  # values written back as they were
