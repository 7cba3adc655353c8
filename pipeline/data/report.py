"""The data report: what happened to every input row; printed, and saved next to the dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataReport:
    """What happened to every input row; printed and saved next to the dataset."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    prompts: int = 0
    pairs: int = 0
    tied_pairs_skipped: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    input_format: str = ""
    shape: str = ""
    fingerprint: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    margin: str = ""
    split_method: str = ""
    notes: list[str] = field(default_factory=list)
    test_file: DataReport | None = None

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        result = {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "prompts": self.prompts,
            "pairs": self.pairs,
            "tied_pairs_skipped": self.tied_pairs_skipped,
            "splits": self.splits,
            "input_format": self.input_format,
            "shape": self.shape,
            "fingerprint": self.fingerprint,
            "columns": dict(self.columns),
            "margin": self.margin,
            "split_method": self.split_method,
            "notes": list(self.notes),
        }
        if self.test_file is not None:
            result["test_file"] = self.test_file.as_dict()
        return result

    def row_counts(self) -> str:
        """Rows read, kept and dropped by reason, in one line (also the detail of an 'every row was dropped' error)."""
        dropped = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        return f"rows read {self.rows_read}, kept {self.rows_kept}, dropped {sum(self.dropped.values())} ({dropped})"

    def _lines(self) -> list[str]:
        kind = ", ".join(x for x in (self.input_format, self.shape) if x)
        return [
            f"data: {self.source}"
            + (f" ({kind})" if kind else "")
            + (f" {self.fingerprint[:19]}" if self.fingerprint else ""),
            f"  {self.row_counts()}",
            f"  prompts {self.prompts}, pairs {self.pairs}"
            + (f", tied pairs skipped {self.tied_pairs_skipped}" if self.tied_pairs_skipped else ""),
            *(f"  note: {note}" for note in self.notes),
        ]

    def summary(self) -> str:
        lines = self._lines()
        if self.test_file is not None:
            lines += ["test " + line if i == 0 else line for i, line in enumerate(self.test_file._lines())]
        if self.split_method:
            lines.append(f"  split: {self.split_method}")
        for name, sizes in self.splits.items():
            lines.append(f"  {name}: {sizes['prompts']} prompts, {sizes['pairs']} pairs")
        return "\n".join(lines)
