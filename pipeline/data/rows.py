"""A file's rows, values exactly as they are, for a caller that adds columns and writes them back (pipeline.score)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.core.errors import UserError
from pipeline.data.columns import not_text_error, plain_column, text_column
from pipeline.data.conversation import answer_text, is_messages, prompt_text
from pipeline.data.sources import SourceTable, iter_file, iter_json_records, json_records, read_file

_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


@dataclass(frozen=True)
class Rows:
    """The rows of a file: `frame` has one object column per column of the file, in order (a name given twice in a
    header is kept twice, as written), holding the values as they are: CSV/TSV text as written; JSON values as parsed
    (integers stay integers, null stays None, lists and objects stay as they are); Parquet values as stored (text
    columns as text, dictionary-encoded ones decoded)."""

    frame: pd.DataFrame
    label: str  # the file, as error messages name it
    where: Callable[[int], str]  # how an error names record i: "row 5", "line 7"

    def texts(self, position: int, role: str = "answer") -> list[str]:
        """The column at `position` as text to score: None -> '', numbers and booleans as JSON writes them; TRL's
        conversational messages rendered as in training (`role` "prompt" or "answer"); any other list or object is
        the one-line error every reader gives."""
        render = prompt_text if role == "prompt" else answer_text
        name = str(self.frame.columns[position])
        values = self.frame.iloc[:, position].tolist()
        for i, value in enumerate(values):
            if isinstance(value, str):
                continue
            if value is None or (isinstance(value, float) and math.isnan(value)):
                values[i] = ""
            elif isinstance(value, (bool, int, float)):
                values[i] = json.dumps(value)
            elif is_messages(value) or (isinstance(value, (list, tuple)) and not value):
                values[i] = render(list(value), f"{self.label}: {self.where(i)}: column {name!r}")
            elif isinstance(value, (list, tuple, dict)) or hasattr(value, "__len__"):
                raise not_text_error(self.label, self.where(i), name)
            else:  # dates, decimals of a Parquet file
                values[i] = str(value)
        return values


def _frame(names: list[str], columns: list[list[Any]], num_rows: int) -> pd.DataFrame:
    index = pd.RangeIndex(num_rows)
    frame = pd.DataFrame({i: pd.Series(values, index=index, dtype=object) for i, values in enumerate(columns)}, index)
    frame.columns = names  # may repeat a name
    return frame


def _checked(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a CSV, TSV, JSONL, JSON or Parquet file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    return path


def _is_json(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def _json_rows(records: list[dict], numbers: list[int], word: str, label: str, names: list[str] | None) -> Rows:
    """Rows of parsed JSON objects: columns `names` (default: every key, in order of first appearance)."""
    names = names if names is not None else list(dict.fromkeys(key for record in records for key in record))
    columns = [[record.get(name) for record in records] for name in names]
    return Rows(_frame(names, columns, len(records)), label, lambda i: f"{word} {numbers[i]}")


def _table_rows(source: SourceTable) -> Rows:
    columns = []
    for i in range(source.table.num_columns):
        column = plain_column(source.table.column(i))
        if any(check(column.type) for check in _TEXT_TYPES):
            text = text_column(source, i).to_pylist()  # validated UTF-8
            if column.null_count:  # Parquet nulls stay null ('' is a different value)
                text = [None if null else value for value, null in zip(text, column.is_null().to_pylist(), strict=True)]
            columns.append(text)
        else:
            columns.append(column.to_pylist())  # numbers, booleans, lists, objects, dates: as stored
    return Rows(_frame(source.table.column_names, columns, source.num_rows), source.label, source.where)


def read_rows(path: str | Path) -> Rows:
    """Rows of a CSV/TSV, JSON Lines, JSON or Parquet file, every value kept (see `Rows`), so a row is written back
    unchanged. Unreadable or malformed files are the data step's one-line errors."""
    path = _checked(path)
    if _is_json(path):
        records, numbers, word = json_records(path, str(path))
        return _json_rows(records, numbers, word, str(path), None)
    return _table_rows(read_file(path))


def iter_rows(path: str | Path, chunk_rows: int, names: list[str] | None = None) -> Iterator[Rows]:
    """`read_rows`, `chunk_rows` rows at a time and in order (each chunk names its rows as the whole file does),
    read block by block, so that memory holds a chunk whatever the size of the file (a JSON array is parsed whole).

    A chunk of a CSV, TSV or Parquet file has the file's columns. A chunk of JSON objects has `names` as its columns
    (the keys of the whole file give `read_rows`' columns); by default its own objects' keys.
    """
    path = _checked(path)
    label = str(path)
    if _is_json(path):
        for records, numbers, word in iter_json_records(path, label, chunk_rows):
            yield _json_rows(records, numbers, word, label, names)
        return
    for source in iter_file(path, chunk_rows):
        yield _table_rows(source)
