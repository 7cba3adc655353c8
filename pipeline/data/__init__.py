"""The data step: an input (CSV, TSV, JSON/JSONL, Parquet, a saved dataset or a Hub id; ranked or pairwise) becomes
validated preference pairs (prompt, chosen, rejected, margin) with a prompt-level train/test split, a
`datasets.DatasetDict`, and a report that counts every row (`python -m pipeline.data` saves and pushes it).

May import `pipeline.core` (and `pipeline.recipe` for its command line).
"""

from pipeline.data.dataset import (
    ColumnMap,
    DataReport,
    build_dataset,
    data_options,
    dataset_hub_target,
    push_dataset,
    read_pairs,
    save_dataset,
)

__all__ = [
    "ColumnMap",
    "DataReport",
    "build_dataset",
    "data_options",
    "dataset_hub_target",
    "push_dataset",
    "read_pairs",
    "save_dataset",
]
