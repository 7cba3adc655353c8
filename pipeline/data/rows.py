"""A file's rows as a DataFrame, for a caller that adds columns and writes the rows back (pipeline.score)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.core.errors import UserError
from pipeline.data.columns import text_column
from pipeline.data.sources import parse_json_lines, read_file


def read_rows(path: str | Path) -> pd.DataFrame:
    """Rows of a CSV/TSV (every value as text, as written), JSON Lines (values as they are), JSON or Parquet file.

    Text and number columns are text exactly as written (no NA guessing, BOM stripped, nulls as ''); lists and
    objects stay as they are, so a row is written back unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not valid UTF-8 at byte {err.start}; re-save the file as UTF-8") from err
        return pd.DataFrame.from_records(parse_json_lines(text.split("\n"), str(path))[0])
    source = read_file(path)
    columns = {}
    for i, name in enumerate(source.table.column_names):
        kind = source.table.column(i).type
        plain = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
        plain |= pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        if name in source.nested or not (plain or pa.types.is_null(kind)):
            columns[name] = source.table.column(i).to_pandas()  # lists and objects, as they are
        else:
            columns[name] = text_column(source, i).to_pandas()
    return pd.DataFrame(columns, index=pd.RangeIndex(source.num_rows))
