"""Reading an input: a file (CSV, TSV, JSONL/JSON, Parquet), a `save_to_disk` directory or a Hub dataset id becomes a
`SourceTable`: a pyarrow table plus what is needed to name a row in an error message (the data step's first stage).
CSV/TSV parsing is in `delimited`; `json_records` is the one exact JSON reader (Lines and arrays; also behind `rows`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset

from pipeline.core.errors import UserError, one_line
from pipeline.data.delimited import RANKED_COLUMNS, csv_row_numbers, iter_delimited, read_delimited, rechunk

HEADER_LINES = 1  # spreadsheet row of a CSV record = its 0-based position + 1 (header) + 1

_FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
_UNREADABLE = {".xlsx", ".xls", ".ods", ".numbers", ".gz", ".bz2", ".zip", ".xz", ".zst"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_READ_CHUNK = 1 << 24


@dataclass
class SourceTable:
    table: pa.Table
    label: str  # the file (or "DIR [train split]") as error messages name it
    kind: str  # csv, tsv, jsonl, json, parquet, save_to_disk, hub
    fingerprint: str
    first_row: int = 1  # row number of record 0 (2 for CSV/TSV: the header is row 1)
    row_word: str = "row"
    row_map: Callable[[], np.ndarray | None] | None = None  # exact numbers when blank lines shift them
    nested: dict[str, int] = field(default_factory=dict)  # column -> first record holding a list/object
    notes: list[str] = field(default_factory=list)
    _rows: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def rows(self, index: Any) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if self.row_map is not None:
            if self._rows is None:
                exact = self.row_map()
                self._rows = exact if exact is not None and len(exact) == self.num_rows else np.empty(0, np.int64)
            if len(self._rows):
                return self._rows[index]
        return index + self.first_row

    def release(self) -> None:
        """Free the raw table once the validated columns are extracted (halves peak memory on big inputs)."""
        self.table = self.table.schema.empty_table()

    def where(self, index: int) -> str:
        return f"{self.row_word} {int(self.rows([index])[0])}"


def _scan(path: Path) -> tuple[str, int, bytes]:
    """One pass over the bytes: sha256, number of '"' and the first 4 bytes."""
    digest, quotes, head = hashlib.sha256(), 0, b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            quotes += chunk.count(b'"')
            head = head or chunk[:4]
    return f"sha256:{digest.hexdigest()}", quotes, head


_BLANK_LINE = rb"\n[ \t]*\r?\n|^\s*\n"  # skipped by the readers, so it shifts row numbers


def _file_has(path: Path, pattern: bytes) -> bool:
    """Whether the file's bytes match `pattern` (checked lazily, only where the answer matters)."""
    return re.search(pattern, path.read_bytes()) is not None


def _check_encoding(head: bytes, label: str) -> None:
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"{label}: the file is UTF-16, not UTF-8; re-save it as UTF-8 (in Excel: CSV UTF-8)")


def _read_delimited(path: Path, kind: str, label: str) -> SourceTable:
    sep = "\t" if kind == "tsv" else ","
    fingerprint, quotes, head = _scan(path)
    _check_encoding(head, label)
    table = read_delimited(path, sep, label, odd_quotes=bool(quotes % 2))
    row_map = lambda: csv_row_numbers(path, sep) if _file_has(path, _BLANK_LINE) else None  # noqa: E731
    return SourceTable(table, label, kind, fingerprint, first_row=HEADER_LINES + 1, row_map=row_map)


def _number_array(values: list[Any]) -> pa.Array:
    """JSON numbers as numbers, exactly: int64 when all are integers that fit, float64 when every value is exact as a
    double; otherwise (an id beyond 2**53 beside a float, an integer beyond int64) text as written."""
    numbers = [v for v in values if v is not None]
    if all(isinstance(v, int) for v in numbers) and all(-(2**63) <= v < 2**63 for v in numbers):
        return pa.array(values, pa.int64())
    if all(isinstance(v, float) or abs(v) <= 2**53 for v in numbers):
        return pa.array(values, pa.float64())
    return pa.array([None if v is None else json.dumps(v) for v in values], pa.large_string())


def _records_table(records: list[dict]) -> tuple[pa.Table, dict[str, int]]:
    """Columns from parsed JSON objects: numbers stay numbers, other scalars become text, lists/objects are flagged."""
    names = list(dict.fromkeys(key for record in records for key in record))
    columns, nested = {}, {}
    for name in names:
        values = [record.get(name) for record in records]
        kinds = {type(v) for v in values if v is not None}
        if kinds and kinds <= {int, float}:
            columns[name] = _number_array(values)
        elif kinds & {list, dict}:
            nested[name] = next(i for i, v in enumerate(values) if isinstance(v, (list, dict)))
            try:  # kept as they are for read_rows; text_column refuses them
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.large_string())
        else:
            text = [v if isinstance(v, str) or v is None else json.dumps(v) for v in values]
            columns[name] = pa.array(text, pa.large_string())
    table = pa.table(columns) if columns else pa.table({"": pa.nulls(len(records))})
    return table, nested


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a key given twice in one object would silently lose a value."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return record


def _duplicate_key_error(label: str, where: str, err: _DuplicateKey) -> UserError:
    return UserError(f"{label}: {where}: key {err.args[0]!r} appears twice in one object; rename one of them")


def parse_json_lines(
    lines: Iterable[bytes] | Iterable[str], label: str, first_line: int = 1
) -> tuple[list[dict], list[int]]:
    """One JSON object per non-blank line: the objects, values as they are, and their line numbers (the first of
    `lines` is line `first_line` of the file).

    Lines given as bytes are decoded one at a time, so an invalid UTF-8 byte is reported with its line.
    """
    records, numbers = [], []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line if isinstance(line, str) else line.decode("utf-8"), object_pairs_hook=_unique_keys)
        except UnicodeDecodeError as err:
            raise UserError(f"{label}: line {number} is not valid UTF-8; re-save the file as UTF-8") from err
        except json.JSONDecodeError as err:
            raise UserError(f"{label}: line {number} is not valid JSON ({err.msg}); one JSON object per line") from err
        except _DuplicateKey as err:
            raise _duplicate_key_error(label, f"line {number}", err) from err
        if not isinstance(record, dict):
            raise UserError(f"{label}: line {number} is a JSON {type(record).__name__}, not an object")
        records.append(record)
        numbers.append(number)
    if not records:
        raise UserError(f"{label}: the file is empty; expected one JSON object per line")
    return records, numbers


def json_records(path: Path, label: str) -> tuple[list[dict], list[int], str]:
    """The objects of a JSON Lines file, or of a JSON array (a .json file may hold either), values exactly as they
    are, with the line (or record) number of each and that word; the exact reader behind every JSON input."""
    data = _read_bytes(path, label)
    _check_encoding(data[:4], label)
    data = data.removeprefix(b"\xef\xbb\xbf")
    if path.suffix.lower() != ".json" or not data.lstrip().startswith(b"["):
        if path.suffix.lower() == ".json" and not data.strip():
            raise UserError(f"{label}: the file is empty; expected a JSON array of objects")
        records, numbers = parse_json_lines(data.split(b"\n"), label)
        return records, numbers, "line"
    try:
        records = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as err:
        raise UserError(f"{label}: not valid UTF-8 at byte {err.start}; re-save the file as UTF-8") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{label}: not valid JSON at line {err.lineno} ({err.msg})") from err
    except _DuplicateKey as err:
        raise _duplicate_key_error(label, "a record", err) from err
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise UserError(f"{label}: record {bad + 1} is not a JSON object; expected an array of objects")
    return records, list(range(1, len(records) + 1)), "record"


def _read_json_exact(path: Path, label: str, fingerprint: str) -> SourceTable:
    """Python's JSON reader: exact line numbers for errors, and columns that mix numbers and text."""
    records, numbers, word = json_records(path, label)
    table, nested = _records_table(records)
    kind = "json" if word == "record" else "jsonl"
    if word == "record":
        return SourceTable(table, label, kind, fingerprint, row_word=word, nested=nested)
    exact = np.array(numbers, dtype=np.int64)
    return SourceTable(table, label, kind, fingerprint, row_word=word, row_map=lambda: exact, nested=nested)


def _jsonl_line_numbers(path: Path) -> np.ndarray:
    lines = path.read_bytes().split(b"\n")
    return np.array([i + 1 for i, line in enumerate(lines) if line.strip()], dtype=np.int64)


# What pyarrow's JSON reader infers from JSON values; anything else (timestamps it guessed from text) is re-read
# exactly. Lists and objects are refused as text by text_column either way.
_JSON_TYPES = (
    pa.types.is_string, pa.types.is_int64, pa.types.is_float64, pa.types.is_boolean, pa.types.is_null,
    pa.types.is_list, pa.types.is_struct,
)  # fmt: skip


def _exact_json_types(table: pa.Table, path: Path) -> bool:
    """Whether pyarrow read every value as written: no guessed timestamps, and no integer beyond 2**53 made a double
    (an integer of 16 or more digits anywhere in the file, beside a double column, sends it to the exact reader)."""
    types = table.schema.types
    if not all(any(check(t) for check in _JSON_TYPES) for t in types):
        return False
    return not (any(pa.types.is_float64(t) for t in types) and _file_has(path, rb"\d{16}"))


def _read_jsonl(path: Path, label: str) -> SourceTable:
    import pyarrow.json as pajson

    fingerprint, _, head = _scan(path)
    _check_encoding(head, label)
    try:
        table = pajson.read_json(str(path))
    except (pa.ArrowInvalid, OSError):  # malformed line, mixed types, empty file: the exact (slower) reader says which
        return _read_json_exact(path, label, fingerprint)
    if table.num_rows == 0 or not _exact_json_types(table, path):
        return _read_json_exact(path, label, fingerprint)
    row_map = lambda: _jsonl_line_numbers(path) if _file_has(path, _BLANK_LINE) else None  # noqa: E731
    return SourceTable(table, label, "jsonl", fingerprint, row_word="line", row_map=row_map)


def _read_json(path: Path, label: str) -> SourceTable:
    fingerprint, _, head = _scan(path)
    _check_encoding(head, label)
    with open(path, "rb") as handle:
        start = handle.read(1 << 16).removeprefix(b"\xef\xbb\xbf").lstrip()
    if start and not start.startswith(b"["):
        return _read_jsonl(path, label)  # JSON Lines under a .json name
    return _read_json_exact(path, label, fingerprint)


def _read_parquet(path: Path, label: str) -> SourceTable:
    import pyarrow.parquet as pq

    fingerprint = _scan(path)[0]
    try:
        table = pq.read_table(str(path))
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{label}: not a readable Parquet file ({one_line(err, 200)})") from err
    return SourceTable(table, label, "parquet", fingerprint)


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _UNREADABLE:
        raise UserError(f"{path}: {suffix} files are not read; export the sheet as CSV (UTF-8), TSV, JSONL or Parquet")
    return _FORMATS.get(suffix, "csv")


def _read_bytes(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise _unreadable(label, err) from err


def _unreadable(label: str, err: OSError) -> UserError:
    return UserError(f"{label}: cannot read the file ({err.strerror or one_line(err)}); check its permissions")


def _check_readable(path: Path, label: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as err:  # permission denied: one line, not a traceback from whichever reader opens it first
        raise _unreadable(label, err) from err
    if path.stat().st_size == 0:
        raise UserError(f"{label}: the file is empty; expected a header row {','.join(RANKED_COLUMNS)}")


def read_file(path: Path) -> SourceTable:
    kind, label = _file_kind(path), str(path)
    _check_readable(path, label)
    if kind in ("csv", "tsv"):
        return _read_delimited(path, kind, label)
    if kind == "jsonl":
        return _read_jsonl(path, label)
    if kind == "json":
        return _read_json(path, label)
    return _read_parquet(path, label)


def iter_file(path: Path, chunk_rows: int) -> Iterator[SourceTable]:
    """`read_file`'s table of a CSV, TSV or Parquet file, `chunk_rows` rows at a time, in order, read block by block
    (memory holds a block and a chunk); each chunk names its rows as the whole file does. JSON: `iter_json_records`."""
    kind, label = _file_kind(path), str(path)
    _check_readable(path, label)
    if kind in ("json", "jsonl"):
        raise ValueError(f"{label}: JSON is read by iter_json_records")
    offset = 0
    for table, row_map in _file_chunks(path, kind, label, chunk_rows):
        first = HEADER_LINES + 1 if kind in ("csv", "tsv") else 1
        sliced = _sliced(row_map, offset, table.num_rows) if row_map else None
        yield SourceTable(table, label, kind, "", first_row=first + offset, row_map=sliced)
        offset += table.num_rows


def _file_chunks(
    path: Path, kind: str, label: str, chunk_rows: int
) -> Iterator[tuple[pa.Table, Callable[[], np.ndarray | None] | None]]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(str(path)).iter_batches(batch_size=chunk_rows)
            for table in rechunk(batches, chunk_rows):
                yield table, None
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{label}: not a readable Parquet file ({one_line(err, 200)})") from err
        return
    sep = "\t" if kind == "tsv" else ","
    _, quotes, head = _scan(path)
    _check_encoding(head, label)
    exact: list[np.ndarray | None] = []  # the whole file's row numbers, found once when an error needs one

    def row_map() -> np.ndarray | None:
        if not exact:
            exact.append(csv_row_numbers(path, sep) if _file_has(path, _BLANK_LINE) else None)
        return exact[0]

    for table in iter_delimited(path, sep, label, bool(quotes % 2), chunk_rows):
        yield table, row_map


def _sliced(row_map: Callable[[], np.ndarray | None], offset: int, rows: int) -> Callable[[], np.ndarray | None]:
    def chunk_map() -> np.ndarray | None:
        exact = row_map()
        return None if exact is None else exact[offset : offset + rows]

    return chunk_map


def iter_json_records(path: Path, label: str, chunk_rows: int) -> Iterator[tuple[list[dict], list[int], str]]:
    """`json_records`, `chunk_rows` objects at a time. JSON Lines are read line by line (memory holds a chunk); a
    JSON array is parsed whole (give JSON Lines for big files)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    _check_encoding(head[:4], label)
    if path.suffix.lower() == ".json" and head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):
        records, numbers, word = json_records(path, label)
        for start in range(0, len(records), chunk_rows):
            yield records[start : start + chunk_rows], numbers[start : start + chunk_rows], word
        return
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        json_records(path, label)  # the empty file's one-line error
    lines: list[bytes] = []
    first, filled = 1, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            lines.append(line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line)
            filled += bool(line.strip())
            if filled == chunk_rows:
                yield *parse_json_lines(lines, label, first), "line"
                lines, first, filled = [], number + 1, 0
    if filled:
        yield *parse_json_lines(lines, label, first), "line"


def _dataset_table(dataset: Any, label: str, kind: str, split: str | None) -> SourceTable:
    if not isinstance(dataset, Dataset):
        raise UserError(f"{label}: a streaming (iterable) dataset cannot be used; load it without streaming")
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    seen = f"{kind}:{split or ''}:{dataset._fingerprint}"
    fingerprint = f"sha256:{hashlib.sha256(seen.encode()).hexdigest()}"
    return SourceTable(dataset.data.table, f"{label} [{split} split]" if split else label, kind, fingerprint)


def _from_datasets(loaded: Any, label: str, kind: str, role: str) -> tuple[SourceTable, SourceTable | None]:
    """A Dataset, or a DatasetDict whose train (and test) splits are used; test role: its test split."""
    if not isinstance(loaded, Mapping):
        return _dataset_table(loaded, label, kind, None), None
    names = list(loaded)
    if role == "test":
        name = "test" if "test" in names else names[0] if len(names) == 1 else None
        if name is None:
            raise UserError(f"{label}: has splits {', '.join(names)} but none is 'test'; give a single test set")
        return _dataset_table(loaded[name], label, kind, name), None
    name = "train" if "train" in names else names[0] if len(names) == 1 else None
    if name is None:
        raise UserError(f"{label}: has splits {', '.join(names)}; it needs a 'train' split (and optionally 'test')")
    main = _dataset_table(loaded[name], label, kind, name)
    test = _dataset_table(loaded["test"], label, kind, "test") if name == "train" and "test" in names else None
    ignored = [n for n in names if n not in (name, "test")]
    if ignored:
        main.notes.append(f"splits not used: {', '.join(ignored)}")
    return main, test


def _read_hub(name: str, role: str) -> tuple[SourceTable, SourceTable | None]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    where = f"{name}: no such file or directory here, and as a Hugging Face Hub dataset id it"
    try:
        loaded = datasets.load_dataset(name)
    except DatasetNotFoundError as err:
        raise UserError(f"{where} does not exist (or needs a token); check dataset_path") from err
    except ConnectionError as err:
        if "OfflineModeIsEnabled" in str(err) or datasets.config.HF_HUB_OFFLINE:
            raise UserError(
                f"{where} cannot be loaded: offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache; "
                "unset HF_HUB_OFFLINE or give a local file"
            ) from err
        raise UserError(f"{where} cannot be loaded: the Hugging Face Hub is unreachable; give a local file") from err
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UserError(f"{where} cannot be loaded ({one_line(err, 200)})") from err
    return _from_datasets(loaded, name, "hub", role)


def read_source(path: str | Path, role: str = "main") -> tuple[SourceTable, SourceTable | None]:
    """A file, a save_to_disk directory or a Hub dataset id; returns the table and a test table if the input has one."""
    text = str(path)
    local = Path(path)
    if local.is_file():
        return read_file(local), None
    if local.is_dir():
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(text)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise UserError(
                f"{text}: a directory, but not a dataset saved with save_to_disk ({one_line(err, 200)}); "
                "give a file or a saved dataset directory"
            ) from err
        return _from_datasets(loaded, text, "save_to_disk", role)
    key = "test_path" if role == "test" else "dataset_path"
    if local.suffix.lower() in _FORMATS or local.suffix.lower() in _UNREADABLE or not _HUB_ID.fullmatch(text):
        raise UserError(f"{text}: no such file (set {key} in the recipe or pass --{key} FILE)")
    return _read_hub(text, role)
