"""Pairing: all C(K,2) ordered pairs of a ranked prompt with the rank (or score) gap as margin, ties skipped;
pairwise inputs as they are; `read_pairs` for every pair of a file or of a saved dataset's test split."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import write_csv

from pipeline.data import build_dataset, read_pairs, save_dataset
from pipeline.data import pairs as pairs_module


def ranked_csv(path: Path, rows: list[tuple[str, str, object]]) -> Path:
    return write_csv(path, "prompt,answer,rank\n" + "".join(f"{p},{a},{r}\n" for p, a, r in rows))


def test_k_answers_become_all_ordered_pairs_with_rank_gap_margin(tmp_path: Path) -> None:
    rows = [("p", "c", 3), ("p", "a", 1), ("p", "d", 4), ("p", "b", 2), ("q", "x", 2), ("q", "y", 1)]
    pairs, report = read_pairs(ranked_csv(tmp_path / "k.csv", rows))
    got = {(r.prompt, r.chosen, r.rejected, r.margin) for r in pairs.itertuples()}
    assert got == {
        ("p", "a", "b", 1.0), ("p", "a", "c", 2.0), ("p", "a", "d", 3.0),
        ("p", "b", "c", 1.0), ("p", "b", "d", 2.0), ("p", "c", "d", 1.0),
        ("q", "y", "x", 1.0),
    }  # fmt: skip
    assert len(pairs) == 6 + 1 and report.tied_pairs_skipped == 0


def test_tied_ranks_form_no_pair_and_are_counted(tmp_path: Path) -> None:
    pairs, report = read_pairs(ranked_csv(tmp_path / "t.csv", [("p", "a", 1), ("p", "b", 1), ("p", "c", 2)]))
    assert sorted(zip(pairs.chosen, pairs.rejected, strict=True)) == [("a", "c"), ("b", "c")]
    assert report.tied_pairs_skipped == 1


def test_score_column_higher_is_better_and_margin_is_the_score_gap(tmp_path: Path, write_bytes, pair_set) -> None:
    path = write_bytes(tmp_path / "s.csv", b"prompt,answer,score\np,a,-1.5\np,b,2\nq,x,3\nq,y,3\nq,z,0\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert pair_set(dataset) == {("p", "b", "a", 3.5), ("q", "x", "z", 3.0), ("q", "y", "z", 3.0)}
    assert report.tied_pairs_skipped == 1 and report.columns["score"] == "score"
    pairs, report = read_pairs(path, input_shape="ranked")
    assert "score" in report.columns and pairs.margin.tolist() == [3.5, 3.0, 3.0]


def test_pairwise_shape_with_and_without_margin(tmp_path: Path, write_bytes, pair_set) -> None:
    path = write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\nq,c,d\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert report.shape == "pairwise" and report.margin == "1.0 (no margin column)"
    assert pair_set(dataset) == {("p", "a", "b", 1.0), ("q", "c", "d", 1.0)}
    path = write_bytes(tmp_path / "m.jsonl", b'{"prompt":"p","chosen":"a","rejected":"b","margin":2.5}\n' * 1)
    path.write_text(path.read_text() + '{"prompt":"q","chosen":"c","rejected":"d","margin":0}\n')
    dataset, _ = build_dataset(path, 0.5, 1)
    assert pair_set(dataset) == {("p", "a", "b", 2.5), ("q", "c", "d", 0.0)}


def test_read_pairs_scores_a_whole_file_of_either_shape(tmp_path: Path, write_bytes, ranked_frame, write_format):
    pairs, _ = read_pairs(write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\nq,c,d\n"))
    assert list(pairs.columns) == ["prompt", "chosen", "rejected", "margin"] and len(pairs) == 2
    pairs, _ = read_pairs(write_format(ranked_frame(), tmp_path / "r.csv"))
    assert len(pairs) == 30


def test_read_pairs_for_evaluation_reads_a_saved_datasets_test_split(tmp_path: Path, ranked_frame, write_format):
    dataset, report = build_dataset(write_format(ranked_frame(), tmp_path / "in.csv"), 0.2, 3)
    save_dataset(dataset, report, tmp_path / "processed")
    pairs, test_report = read_pairs(tmp_path / "processed", role="test")
    assert pairs.to_dict("list") == dataset["test"].to_pandas().to_dict("list")
    assert test_report.source.endswith("[test split]") and test_report.shape == "pairwise"
    dataset["train"].save_to_disk(str(tmp_path / "one"))  # a single Dataset: all of it
    assert len(read_pairs(tmp_path / "one", role="test")[0]) == dataset["train"].num_rows


def test_vectorised_prompt_normalisation_matches_python() -> None:
    random.seed(0)
    pieces = ["a", "B", " ", "  ", "\t", "\n", "\x0b", "\x1c", "\u00a0", "É", "ß", "\u2003", "İ", "\r\n"]
    values = list(dict.fromkeys("".join(random.choices(pieces, k=random.randint(0, 10))) for _ in range(3000)))
    key_of, keys = pairs_module.prompt_keys(pa.array(values, pa.large_string()))
    assert [keys[k] for k in key_of] == [" ".join(v.split()).lower() for v in values]


def test_too_many_pairs_is_an_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranked_frame, write_format, fails
) -> None:
    monkeypatch.setattr(pairs_module, "MAX_PAIRS", 5)
    rows = [("p", f"a{j}", j + 1) for j in range(5)]  # C(5,2) = 10 pairs
    fails(write_format(ranked_frame(rows), tmp_path / "k.csv"), r"10 pairs from prompts with up to 5 answers")


def reference_pairs(frame: pd.DataFrame) -> tuple[set[tuple], int]:
    """Pairs and skipped ties, one prompt at a time in plain Python; a prompt whose answers all tie is dropped."""
    pairs, tied = set(), 0
    for prompt, group in frame.groupby("prompt", sort=False):
        answers = list(zip(group["answer"], group["rank"], strict=True))
        if len({rank for _, rank in answers}) < 2:
            continue
        for (a, rank_a), (b, rank_b) in itertools.combinations(answers, 2):
            if rank_a == rank_b:
                tied += 1
            else:
                (best, rank_best), (worst, rank_worst) = sorted([(a, rank_a), (b, rank_b)], key=lambda x: x[1])
                pairs.add((prompt, best, worst, float(rank_worst - rank_best)))
    return pairs, tied


def test_large_ranked_file_takes_the_vectorised_path(tmp_path: Path, write_format, pair_set) -> None:
    """Not a timing test: 20,000 rows with random order, ties and duplicates give the same pairs as a plain loop."""
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame(
        {"prompt": [f"p{i}" for i in rng.integers(0, 4000, n)], "answer": [f"a{i}" for i in rng.integers(0, 6, n)]}
    ).drop_duplicates()
    frame["rank"] = rng.integers(1, 4, len(frame))
    dataset, report = build_dataset(write_format(frame, tmp_path / "big.csv"), 0.2, 1)
    expected, tied = reference_pairs(frame)
    assert pair_set(dataset) == expected
    assert report.tied_pairs_skipped == tied and report.pairs == len(expected)
