"""Validation: every drop is counted by reason; a bad value, an empty answer (when not dropped) or a conflicting
repeat is a one-line error naming the file and the row."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_csv

from pipeline.core.errors import UserError
from pipeline.data import build_dataset, read_pairs

# --- drops -------------------------------------------------------------------------------------------------------


def test_every_drop_reason_is_counted(tmp_path: Path, write_bytes) -> None:
    content = (
        "prompt,answer,rank\n"
        "p,a,1\np,b,2\n"  # kept
        ",x,1\n"  # empty prompt
        "p,   ,3\n"  # empty answer
        "p,a,1\n"  # duplicate (same rank)
        "single,only,1\n"  # one answer
        "tied,x,1\ntied,y,1\n"  # all answers tied: no pair
        "some tied,x,1\nsome tied,y,1\nsome tied,z,2\n"  # kept; the x-y tie is no pair
        ",,\n"  # empty row (spreadsheet export)
    )
    dataset, report = build_dataset(write_bytes(tmp_path / "d.csv", content.encode()), 0.5, 1)
    assert report.dropped == {
        "empty_row": 1,
        "empty_prompt": 1,
        "empty_answer": 1,
        "duplicate_row": 1,
        "prompt_with_one_answer": 1,
        "prompt_all_answers_tied": 2,
    }
    assert report.rows_read == 12 and report.rows_kept == 5 and report.tied_pairs_skipped == 1
    assert report.pairs == 3 and report.prompts == 2
    assert sum(s["pairs"] for s in report.splits.values()) == 3


def test_pairwise_drops_empty_identical_duplicate_and_contradicting_rows(tmp_path: Path, write_bytes, pair_set):
    content = b"prompt,chosen,rejected\np,a,b\np,a,b\nq,x,y\nq,y,x\nr,same,same \ns,,v\n,u,v\nt,u,v\n,,\n"
    dataset, report = build_dataset(write_bytes(tmp_path / "p.csv", content), 0.5, 1)
    assert report.dropped == {
        "empty_row": 1,
        "empty_prompt": 1,
        "empty_answer": 1,
        "chosen_equals_rejected": 1,
        "duplicate_row": 1,
        "contradicting_pair": 2,
    }
    assert report.rows_read == 9 and report.rows_kept == 2
    assert pair_set(dataset) == {("p", "a", "b", 1.0), ("t", "u", "v", 1.0)}


# --- errors ------------------------------------------------------------------------------------------------------


def test_empty_answers_are_an_error_when_not_dropped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", "prompt,answer,rank\np,a,1\np,,2\np,b,3\n")
    with pytest.raises(UserError, match=r"row 3: empty answer"):
        read_pairs(path, drop_empty_answers=False, input_shape="ranked")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prompt,response,rank\np,a,1\n", r"missing column answer \(found .prompt., .response., .rank.\)"),
        ("prompt,answer,rank\np,a,1\np,b,first\n", r"row 3: rank 'first' is not a positive number"),
        ("prompt,answer,rank\np,a,1\np,b,\n", r"row 3: rank '' is not a positive number"),
        ("prompt,answer,rank\np,a,-1\np,b,2\n", r"row 2: rank '-1'"),
        ("prompt,answer,rank\np,a,1\np,a,2\n", r"rows 2, 3: the same prompt and answer have different ranks"),
        ("", r"the file is empty"),
        ("prompt,answer,rank\n", r"has a header but no rows"),
        ("prompt,answer,rank\np,a,1\nq,b,1\n", r"every row was dropped"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_row(tmp_path: Path, content: str, message: str) -> None:
    path = write_csv(tmp_path / "bad.csv", content)
    with pytest.raises(UserError, match=message) as info:
        read_pairs(path, input_shape="ranked")
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"prompt,chosen,rejected,margin\np,a,b,1\np,a,b,2\n", r"rows 2, 3: the same prompt, chosen and rejected have"),
        (b"prompt,chosen,rejected,margin\np,a,b,-1\n", r"row 2: margin '-1' is not a number >= 0"),
        (b"prompt,chosen,rejected\np,a,\nq,c,d\n", r"row 2: empty chosen or rejected \(set drop_empty_answers"),
        (b"prompt,chosen\np,a\n", r"missing column rejected"),
    ],
)
def test_pairwise_errors(tmp_path: Path, content: bytes, match: str, write_bytes, fails) -> None:
    fails(write_bytes(tmp_path / "p.csv", content), match, drop_empty_answers=False)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("zero.csv", b"prompt,answer,rank\np,a,0\np,b,1\n", r"row 2: rank '0' is not a positive number"),
        ("inf.csv", b"prompt,answer,rank\np,a,1\np,b,inf\n", r"row 3: rank 'inf' is not a positive number"),
        ("score.csv", b"prompt,answer,score\np,a,1\np,b,high\n", r"row 3: score 'high' is not a number"),
        ("null.jsonl", b'{"prompt":"p","answer":"a","rank":null}\n', r"line 1: rank is missing"),
        (
            "mapped.csv",
            b"prompt,answer,stars\np,a,x\n",
            r"row 2: rank \(column 'stars'\) 'x' is not a positive number",
        ),
        ("conflict.tsv", b"prompt\tanswer\trank\np\ta\t1\np\tb\t2\np\ta\t2\n", r"rows 2, 4: the same prompt and"),
        ("header.tsv", b"prompt\tanswer\trank\n", r"has a header but no rows"),
        ("all.csv", b"prompt,answer,rank\np,a,1\n,b,2\n", r"every row was dropped \(rows read 2, kept 0, dropped 2"),
        ("tied.csv", b"prompt,answer,rank\np,a,1\np,b,1\n", r"every row was dropped .*prompt_all_answers_tied: 2"),
        (
            "nested.jsonl",
            b'{"prompt":[{"role":"user"}],"answer":"a","rank":1}\n',
            r"line 1: column 'prompt': message 1",
        ),
        (
            "mixed.jsonl",
            b'{"prompt":[1],"answer":"a","rank":1}\n{"prompt":"p","rank":"2"}\n',
            r"line 1: column 'prompt'",
        ),
    ],
)
def test_row_level_errors_name_file_row_and_reason(
    tmp_path: Path, name: str, content: bytes, match: str, write_bytes, fails
) -> None:
    path = write_bytes(tmp_path / name, content)
    columns = {"rank_column": "stars"} if name == "mapped.csv" else None
    message = fails(path, match, columns=columns)
    assert message.startswith(str(path))
