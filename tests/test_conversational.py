"""A conversational preference file (TRL's format) trains, evaluates and scores end to end with the README's commands,
and the trained model's scores equal those of the same data as rendered text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_module, write_recipe

from pipeline.data.conversation import CONFIG_KEY, CONVERSATION_FORMAT


def conversational_copy(source: Path, target: Path) -> Path:
    """data/answers.csv's prompts and ranked answers as TRL-style messages (ranked: prompt, answer, rank)."""
    import pandas as pd

    frame = pd.read_csv(source)
    rows = [{"prompt": [{"role": "user", "content": p}], "answer": [{"role": "assistant", "content": a}], "rank": r}
            for p, a, r in zip(frame["prompt"], frame["answer"], frame["rank"], strict=True)]  # fmt: skip
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def test_conversational_data_trains_evaluates_and_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    from pipeline.cli import train

    data = conversational_copy(REPO / "data/answers.csv", tmp_path / "chat.jsonl")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "model", dataset_path=str(data),
                          max_steps=3, save_strategy="no")  # fmt: skip
    results = train.main(["--config", str(recipe)])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config[CONFIG_KEY] == CONVERSATION_FORMAT
    assert results["num_pairs"] > 0

    evaluated = run_module("pipeline.evaluation", "--model", str(tmp_path / "model"), "--data", str(data))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]

    rows = tmp_path / "rows.jsonl"
    chat = [{"prompt": [{"role": "user", "content": "How do I boil an egg?"}],
             "response": [{"role": "assistant", "content": "Boil it for 9 minutes."}]}]  # fmt: skip
    rows.write_text(json.dumps(chat[0]) + "\n")
    scored = run_module("pipeline.score", "--model", str(tmp_path / "model"), "--input", str(rows),
                        "--output", str(tmp_path / "scored.jsonl"), "--no_progress")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    written = json.loads((tmp_path / "scored.jsonl").read_text())

    from pipeline.model.scorer import RewardScorer

    plain = RewardScorer.from_pretrained(tmp_path / "model").score(["Human: How do I boil an egg?"],
                                                                   ["Boil it for 9 minutes."])  # fmt: skip
    assert written["score"] == pytest.approx(float(plain[0]), abs=1e-6)
