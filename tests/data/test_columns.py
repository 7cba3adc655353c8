"""Columns: the one column finder, the shape (ranked or pairwise), recipe column mapping and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.data import ColumnMap, build_dataset, find_column


def test_find_column_prefers_exact_names_then_ignores_case_and_spaces() -> None:
    names = [" Prompt ", "Response", "answer"]
    assert find_column(names, "prompt") == 0
    assert find_column(names, "response", "answer") == 2  # an exact name of any wanted beats a loose one
    assert find_column(names, "RESPONSE", "nothing") == 1
    assert find_column(names, "rank") is None
    assert find_column(["Rank", "rank "], "rank") == 0  # without a label, the first of two loose matches
    with pytest.raises(UserError, match=r"^f.csv: column 'rank' appears 2 times in the header"):
        find_column(["Rank", "rank "], "rank", label="f.csv")


def test_rank_and_score_together_need_a_choice(tmp_path: Path, write_bytes, fails, pair_set) -> None:
    path = write_bytes(tmp_path / "b.csv", b"prompt,answer,rank,score\np,a,1,0\np,b,2,9\nq,a,1,0\nq,b,2,9\n")
    fails(path, r"has both a 'rank' and a 'score' column; keep one, or set score_column: ''")
    by_rank, _ = build_dataset(path, 0.5, 1, columns={"score_column": ""})
    by_score, _ = build_dataset(path, 0.5, 1, columns={"rank_column": ""})
    assert ("p", "a", "b", 1.0) in pair_set(by_rank) and ("p", "b", "a", 9.0) in pair_set(by_score)


def test_columns_are_mapped_by_recipe_names(tmp_path: Path, ranked_frame, write_format, write_bytes) -> None:
    frame = ranked_frame(columns=("question", "response", "position"))
    path = write_format(frame, tmp_path / "mapped.csv")
    columns = ColumnMap(prompt="question", answer="response", rank="position")
    dataset, report = build_dataset(path, 0.2, 3, columns=columns)
    assert report.pairs == 30 and report.columns == {"prompt": "question", "answer": "response", "rank": "position"}
    pairwise = write_bytes(tmp_path / "pw.csv", b"q,good,bad\np,a,b\nr,c,d\n")
    _, report = build_dataset(pairwise, 0.5, 1, columns={"prompt_column": "q", "chosen": "good", "rejected": "bad"})
    assert report.shape == "pairwise" and report.pairs == 2


def test_header_case_and_spaces_are_forgiven_but_a_misspelt_column_gets_a_suggestion(
    tmp_path: Path, write_bytes, fails
) -> None:
    content = b" Prompt ,ANSWER,Rank\np,a,1\np,b,2\nq,a,1\nq,b,2\n"
    _, report = build_dataset(write_bytes(tmp_path / "c.csv", content), 0.5, 1)
    assert report.columns == {"prompt": "Prompt", "answer": "ANSWER", "rank": "Rank"}
    message = fails(write_bytes(tmp_path / "m.csv", b"prompt,answer,rnak\np,a,1\n"), r"missing column rank")
    assert "did you mean 'rnak'?" in message and "rank_column" in message
    message = fails(write_bytes(tmp_path / "m2.csv", b"promt,answr,rank\np,a,1\n"), r"missing columns prompt")
    assert "did you mean 'promt'?" in message and "did you mean 'answr'?" in message
    fails(write_bytes(tmp_path / "d.csv", b"prompt,answer,rank,rank\np,a,1,1\n"), r"column 'rank' appears 2 times")


def test_input_shape_can_be_forced(tmp_path: Path, write_bytes, fails) -> None:
    path = write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\n")
    fails(path, r"missing columns answer, rank", input_shape="ranked")
    fails(path, r"input_shape must be one of auto, ranked, pairwise", input_shape="pairs")
