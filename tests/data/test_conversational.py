"""TRL's conversational preference formats in the data step: rendered to HH text, from every reader."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from pipeline.core.errors import UserError
from pipeline.data import build_dataset, read_pairs

USER = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "why is the sky blue"}]


def explicit_rows(n: int = 6) -> list[dict]:
    return [
        {"prompt": [*USER[:1], {"role": "user", "content": f"question {i}"}],
         "chosen": [{"role": "assistant", "content": f"good answer {i}"}],
         "rejected": [{"role": "assistant", "content": f"bad answer {i}"}]}
        for i in range(n)
    ]  # fmt: skip


def plain_rows(n: int = 6) -> list[dict]:
    return [{"prompt": f"System: be kind\n\nHuman: question {i}", "chosen": f"good answer {i}",
             "rejected": f"bad answer {i}"} for i in range(n)]  # fmt: skip


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_explicit_and_implicit_prompts_give_the_pairs_of_the_rendered_text(tmp_path: Path, suffix: str) -> None:
    expected = pd.DataFrame(plain_rows())
    explicit, report = read_pairs(write(tmp_path / f"explicit{suffix}", explicit_rows()))
    assert explicit[["prompt", "chosen", "rejected"]].equals(expected)
    assert any("conversations rendered as text (human-assistant-v1)" in note for note in report.notes)
    implicit_rows = [
        {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in explicit_rows()
    ]
    implicit, report = read_pairs(write(tmp_path / f"implicit{suffix}", implicit_rows))
    assert implicit[["prompt", "chosen", "rejected"]].equals(expected)
    assert any("prompt = shared messages" in note for note in report.notes)


def test_saved_and_hub_style_datasets_and_ranked_answers(tmp_path: Path) -> None:
    # A DatasetDict saved with save_to_disk holds the messages as Arrow lists of structs (as a Hub dataset does).
    DatasetDict(
        {"train": Dataset.from_list(explicit_rows(8)), "test": Dataset.from_list(explicit_rows(3))}
    ).save_to_disk(str(tmp_path / "saved"))
    dataset, _ = build_dataset(tmp_path / "saved", test_size=0.2, split_seed=0)
    assert dataset["test"]["prompt"][0] == "System: be kind\n\nHuman: question 0"
    ranked = [{"prompt": USER, "answer": [{"role": "assistant", "content": text}], "rank": rank}
              for rank, text in enumerate(["best", "middle", "worst"], start=1)]  # fmt: skip
    pairs, _ = read_pairs(write(tmp_path / "ranked.jsonl", ranked))
    assert pairs[["chosen", "rejected"]].values.tolist() == [["best", "middle"], ["best", "worst"], ["middle", "worst"]]
    assert set(pairs["prompt"]) == {"System: be kind\n\nHuman: why is the sky blue"}


@pytest.mark.parametrize(
    ("chosen", "message"),
    [
        ([{"content": "hi"}], "line 3: column 'chosen': message 1 has no 'role'"),
        (
            [{"role": "bot", "content": "hi"}],
            "line 3: column 'chosen': message 1 has role 'bot'; roles are 'system', 'user', 'assistant'",
        ),
        (
            [{"role": "assistant", "content": {"text": "hi"}}],
            "line 3: column 'chosen': message 1 has a dict content; content must be text",
        ),
        (
            [{"role": "assistant", "content": 7}],
            "line 3: column 'chosen': message 1 has a int content; content must be text",
        ),
        ([], "line 3: column 'chosen': the conversation is empty; give at least one message"),
    ],
)
def test_malformed_messages_are_one_line_errors_naming_the_row(tmp_path: Path, chosen, message: str) -> None:
    rows = explicit_rows(4)
    rows[2]["chosen"] = chosen
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as error:
        read_pairs(path)
    assert str(error.value) == f"{path}: {message}" or str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


def test_an_implicit_pair_without_a_shared_prompt_is_an_error_naming_the_row(tmp_path: Path) -> None:
    rows = [{"chosen": [{"role": "user", "content": f"a {i}"}, {"role": "assistant", "content": "x"}],
             "rejected": [{"role": "user", "content": f"b {i}"}, {"role": "assistant", "content": "y"}]}
            for i in range(3)]  # fmt: skip
    path = write(tmp_path / "implicit.jsonl", rows)
    with pytest.raises(UserError, match=r"line 1: chosen and rejected share no leading prompt message"):
        read_pairs(path)
