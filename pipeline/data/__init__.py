"""The data step: an input (CSV, TSV, JSON/JSONL, Parquet, a saved dataset or a Hub id; ranked or pairwise) becomes
validated preference pairs (prompt, chosen, rejected, margin) with a prompt-level train/test split, a
`datasets.DatasetDict`, and a report that counts every row (`python -m pipeline.data` saves and pushes it).

May import `pipeline.core` (and `pipeline.recipe` for its command line).
"""

from pipeline.data.columns import ColumnMap, find_column
from pipeline.data.publish import data_options, dataset_hub_target, push_dataset, save_dataset
from pipeline.data.report import DataReport
from pipeline.data.rows import iter_rows, read_rows
from pipeline.data.split import build_dataset, read_pairs

__all__ = [
    "ColumnMap",
    "DataReport",
    "build_dataset",
    "data_options",
    "dataset_hub_target",
    "find_column",
    "iter_rows",
    "push_dataset",
    "read_pairs",
    "read_rows",
    "save_dataset",
]
