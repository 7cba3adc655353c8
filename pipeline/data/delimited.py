"""CSV and TSV: the header parsed with Python's csv module, the body with pyarrow's reader; a record pyarrow cannot
parse, or a quote that is never closed, is found again with the csv module to name its row and line."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core.errors import UserError, one_line

RANKED_COLUMNS = ("prompt", "answer", "rank")

_CSV_BLOCK = 1 << 24
# A field may be as long as the file (a pasted document): lift the csv module's 128 KiB default limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _read_header(path: Path, sep: str, label: str) -> list[str]:
    """The header record, parsed with Python's csv module (it may span lines when a name is quoted)."""
    raw, record = b"", None
    with open(path, "rb") as handle:
        while record is None:
            line = handle.readline()
            raw += line
            text = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
            try:
                record = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True), [])
            except csv.Error as err:
                if "unexpected end of data" not in str(err):
                    raise UserError(
                        f"{label}: row 1 (the header) cannot be parsed ({err}); fix the column names"
                    ) from err
                if not line or len(raw) > 1 << 16:
                    raise _quote_error(label, 1, 1) from err
                continue  # a quoted name with a line break: read on
    if not record and not path.read_bytes().strip(b"\xef\xbb\xbf \t\r\n"):
        raise UserError(f"{label}: the file is empty; expected a header row {','.join(RANKED_COLUMNS)}")
    if not record:
        raise UserError(f"{label}: row 1 is empty; the first row must be the header ({','.join(RANKED_COLUMNS)})")
    if any("\udc80" <= ch <= "\udcff" for name in record for ch in name):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{label}: row 1 (the header) is not valid UTF-8 at byte offset {err.start}; re-save the file as UTF-8"
            ) from err
    return [name.strip() for name in record]


def _csv_records(path: Path, sep: str) -> Iterator[tuple[int, int, list[str], list[str]]]:
    """(row, first line, record, lines) for every record, blank ones included; the slow, exact error path."""
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines), delimiter=sep)
    previous = 0
    for index, record in enumerate(reader):
        yield index + 1, previous + 1, record, lines
        previous = reader.line_num


def _unterminated(lines: list[str], start_line: int, sep: str) -> bool:
    rest = io.StringIO("".join(lines[start_line - 1 :]), newline="")
    try:
        next(csv.reader(rest, delimiter=sep, strict=True), None)
    except csv.Error as err:
        return "unexpected end of data" in str(err)
    return False


def _quote_error(label: str, row: int, line: int) -> UserError:
    return UserError(
        f"{label}: row {row} (line {line}): a quoted field opens here and is never closed, so the rest of the file "
        'would be read into it; add the closing quote (a quote inside a quoted field is written "")'
    )


def _diagnose_delimited(path: Path, sep: str, ncols: int, label: str, err: BaseException) -> UserError:
    """Find the exact row behind a parse error of pyarrow's reader."""
    last = None
    for row, line, record, lines in _csv_records(path, sep):
        if row == 1 or not record:
            continue
        if any("\udc80" <= ch <= "\udcff" for value in record for ch in value):
            return UserError(f"{label}: row {row} (line {line}) is not valid UTF-8; re-save the file as UTF-8")
        if len(record) != ncols:
            if _unterminated(lines, line, sep):
                return _quote_error(label, row, line)
            name = "a tab" if sep == "\t" else f"'{sep}'"
            return UserError(
                f"{label}: row {row} (line {line}) has {len(record)} fields but the header has {ncols}; "
                f"put quotes around fields that contain {name}, or fix the row"
            )
        last = (row, line, lines)
    if last and _unterminated(last[2], last[1], sep):
        return _quote_error(label, last[0], last[1])
    return UserError(f"{label}: cannot be parsed ({one_line(err, 200)})")


def _check_closed_quotes(path: Path, sep: str, label: str) -> None:
    """An odd number of '"' may mean the last record's quote is never closed (pyarrow reads that silently)."""
    last = None
    for row, line, record, lines in _csv_records(path, sep):
        if record:
            last = (row, line, lines)
    if last and _unterminated(last[2], last[1], sep):
        raise _quote_error(label, last[0], last[1])


def csv_row_numbers(path: Path, sep: str) -> np.ndarray:
    """Spreadsheet row of every data record when blank lines (skipped by the reader) shift them."""
    return np.array([row for row, _, record, _ in _csv_records(path, sep) if row > 1 and record], dtype=np.int64)


def _csv_options(sep: str, columns: int, block_size: int) -> dict[str, Any]:
    """pyarrow's CSV options: every field as bytes (validated as UTF-8 where it is used), nothing read as null. The
    header is read as data row 0 (then dropped), so pyarrow and Python agree on where records start."""
    import pyarrow.csv as pacsv

    generated = [f"f{i}" for i in range(columns)]
    return {
        "read_options": pacsv.ReadOptions(column_names=generated, block_size=block_size),
        "parse_options": pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=dict.fromkeys(generated, pa.binary()), strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }  # fmt: skip


def read_delimited(path: Path, sep: str, label: str, odd_quotes: bool) -> pa.Table:
    """Every record as binary columns named by the header; `odd_quotes`: the file has an odd number of '"'."""
    import pyarrow.csv as pacsv

    names = _read_header(path, sep, label)

    def read(block_size: int) -> pa.Table:
        return pacsv.read_csv(str(path), **_csv_options(sep, len(names), block_size))

    try:
        try:
            table = read(_CSV_BLOCK)
        except pa.ArrowInvalid as err:
            if "straddling" not in str(err):
                raise
            # A record longer than a block: read the file as one block (its table is held whole anyway).
            table = read(min(max(path.stat().st_size + 1, _CSV_BLOCK), 2**31 - 1))
    except (pa.ArrowInvalid, OSError) as err:
        raise _diagnose_delimited(path, sep, len(names), label, err) from err
    if odd_quotes:
        _check_closed_quotes(path, sep, label)
    return table.slice(1).rename_columns(names)


def iter_delimited(path: Path, sep: str, label: str, odd_quotes: bool, chunk_rows: int) -> Iterator[pa.Table]:
    """`read_delimited`'s table `chunk_rows` records at a time (the last chunk may be shorter), read block by block:
    memory holds a block and a chunk, whatever the size of the file. Errors are `read_delimited`'s."""
    names = _read_header(path, sep, label)
    if odd_quotes:
        _check_closed_quotes(path, sep, label)
    for chunk in rechunk(_record_batches(path, sep, label, len(names)), chunk_rows):
        yield chunk.rename_columns(names)


def _record_batches(path: Path, sep: str, label: str, columns: int) -> Iterator[pa.RecordBatch]:
    """The records after the header, a block at a time. A record longer than a block starts the reading again with
    blocks as large as the file, after the records already given."""
    import pyarrow.csv as pacsv

    given, block_size = 1, _CSV_BLOCK  # records given so far, the header (record 0) included
    while True:
        try:
            skip = given
            for batch in pacsv.open_csv(str(path), **_csv_options(sep, columns, block_size)):
                batch, skip = batch.slice(min(skip, batch.num_rows)), max(0, skip - batch.num_rows)
                if batch.num_rows:
                    given += batch.num_rows
                    yield batch
            return
        except pa.ArrowInvalid as err:
            if "straddling" in str(err) and block_size == _CSV_BLOCK:
                block_size = min(max(path.stat().st_size + 1, _CSV_BLOCK), 2**31 - 1)
                continue
            raise _diagnose_delimited(path, sep, columns, label, err) from err
        except OSError as err:
            raise _diagnose_delimited(path, sep, columns, label, err) from err


def rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches' records as tables of exactly `rows` records (the last one may be shorter)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held)
