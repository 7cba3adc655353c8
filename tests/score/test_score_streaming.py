"""`python -m pipeline.score` reads and writes in chunks: the same rows, values and ranks as reading the whole file,
errors naming rows of later chunks, and no output at all when a later chunk fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import PAIRS, quick_start, score_cli

from pipeline.data import iter_rows, read_rows
from pipeline.score.cli import per_prompt_rank, prompt_keys

CHUNK = 3  # rows a chunk: the 21 rows below span 7 chunks


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.model.scorer.CHUNK_SIZE", CHUNK)


def rows_frame() -> pd.DataFrame:
    # Each prompt's responses are spread over several chunks, so --rank must rank across chunks.
    rows = [(p, f"{r} ({i})") for i in range(3) for p, r in PAIRS]
    return pd.DataFrame({"id": range(len(rows)), "prompt": [p for p, _ in rows], "response": [r for _, r in rows]})


def frames_equal(chunks: list, whole) -> None:
    joined = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert list(joined.columns) == list(whole.frame.columns)
    assert joined.to_dict("list") == whole.frame.to_dict("list")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_chunks_join_into_the_rows_read_whole(tmp_path: Path, suffix: str) -> None:
    frame = rows_frame()
    path = tmp_path / f"rows{suffix}"
    if suffix in (".csv", ".tsv"):
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=suffix == ".jsonl")
    chunks = list(iter_rows(path, CHUNK))
    assert [len(c.frame) for c in chunks] == [CHUNK] * 7
    frames_equal(chunks, read_rows(path))


def test_a_record_longer_than_a_block_and_blank_lines_keep_rows_and_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.data.delimited._CSV_BLOCK", 256)  # the long answer straddles blocks
    lines = ["prompt,response"] + [f"p{i},a{i}" for i in range(8)]
    lines[5] = 'p4,"' + "long, quoted\nanswer " * 60 + '"'
    lines.insert(3, "")  # a blank line shifts the spreadsheet rows after it
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_rows(path, CHUNK))
    frames_equal(chunks, read_rows(path))
    assert chunks[2].where(1) == read_rows(path).where(7) == "row 10"


def test_an_error_in_a_later_chunk_names_its_line_and_leaves_no_output(
    tiny_model_dir: Path, tmp_path: Path, small_chunks, capsys
) -> None:
    source = tmp_path / "rows.jsonl"
    records = [{"prompt": p, "response": r} for _ in range(2) for p, r in PAIRS]
    records[9]["response"] = {"not": "text"}
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    target = tmp_path / "out.jsonl"
    assert score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(target)) == 2
    assert "line 10: column 'response' holds a list or object" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no output, no staging file


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_chunked_scores_ranks_and_values_are_the_whole_files(
    tiny_model_dir: Path, tmp_path: Path, small_chunks, suffix: str
) -> None:
    frame = rows_frame()
    source = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        frame.to_csv(source, index=False)
    else:  # a key that only later objects have: a column of the output, null before it appears
        records = frame.to_dict("records")
        records[-1]["late"] = [1, None]
        source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    target = tmp_path / f"out{suffix}"
    assert score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(target), "--rank") == 0
    read = pd.read_csv(target) if suffix == ".csv" else pd.read_json(target, lines=True)
    assert read["id"].tolist() == frame["id"].tolist() and read["response"].tolist() == frame["response"].tolist()
    expected = quick_start(tiny_model_dir, list(zip(frame["prompt"], frame["response"], strict=True)))
    np.testing.assert_allclose(read["score"], expected, atol=1e-4, rtol=0)
    ranks = per_prompt_rank(prompt_keys(frame["prompt"].tolist()), read["score"].to_numpy())
    assert read["score_rank"].tolist() == ranks.tolist()  # ranked over every chunk, not within one
    if suffix == ".jsonl":
        lines = [json.loads(line) for line in target.read_text().splitlines()]
        assert list(lines[0]) == ["id", "prompt", "response", "late", "score", "score_rank"]
        assert lines[0]["late"] is None and lines[-1]["late"] == [1, None]


def test_a_later_object_that_changes_the_scored_column_is_an_error(
    tiny_model_dir: Path, tmp_path: Path, small_chunks, capsys
) -> None:
    # "answer" is the response column of the first chunk; a later "response" key would be preferred by read_rows.
    records = [{"prompt": p, "answer": r} for p, r in PAIRS]
    records[-1]["response"] = "late"
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert score_cli("--model", str(tiny_model_dir), "--input", str(source), "--output", str(tmp_path / "o.csv")) == 2
    assert "--prompt_column / --response_column" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_a_header_only_file_is_an_error_before_the_model_loads(tmp_path: Path, capsys) -> None:
    source = tmp_path / "empty.csv"
    source.write_text("prompt,response\n")
    assert list(iter_rows(source, CHUNK)) == []
    assert score_cli("--model", "no-such-model", "--input", str(source), "--output", str(tmp_path / "o.csv")) == 2
    assert capsys.readouterr().err.strip() == f"error: {source}: no rows to score (only a header)"
