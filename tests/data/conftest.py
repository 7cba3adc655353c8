"""Fixtures of the data tests: ranked rows written in any supported format, the pairs of a DatasetDict as a set, and a
check that build_dataset fails with a one-line error. They are fixtures because a test folder is not importable here
(`--import-mode=importlib`; only tests/ is on the path, for helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import UserError
from pipeline.data import build_dataset

ROWS = [(f"prompt {i}", f"answer {i}-{j}", j + 1) for i in range(10) for j in range(3)]  # 10 prompts x 3 answers


def _ranked_frame(rows: Sequence[tuple] = ROWS, columns: Sequence[str] = ("prompt", "answer", "rank")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_format(frame: pd.DataFrame, path: Path) -> Path:
    """The same rows in any supported format (written with pandas/pyarrow, as other tools would)."""
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", force_ascii=False)
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def _pair_set(dataset) -> set[tuple]:
    return {
        (r["prompt"], r["chosen"], r["rejected"], r["margin"]) for split in dataset.values() for r in split.to_list()
    }


def _fails(path, match: str | None = None, **kwargs) -> str:
    """build_dataset(path) raises a UserError matching `match`, in one line; returns its message."""
    with pytest.raises(UserError, match=match) as info:
        build_dataset(path, 0.2, 1, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def ranked_frame() -> Callable[..., pd.DataFrame]:
    """Ranked rows as a DataFrame: by default 10 prompts x 3 answers ranked 1-3."""
    return _ranked_frame


@pytest.fixture
def write_bytes() -> Callable[[Path, bytes], Path]:
    return _write_bytes


@pytest.fixture
def write_format() -> Callable[[pd.DataFrame, Path], Path]:
    return _write_format


@pytest.fixture
def pair_set() -> Callable[..., set[tuple]]:
    """(prompt, chosen, rejected, margin) of every split of a DatasetDict."""
    return _pair_set


@pytest.fixture
def fails() -> Callable[..., str]:
    return _fails
