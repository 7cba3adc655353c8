"""Which evaluation pairs come from prompts the model was trained on, so an evaluation is never called held-out when
it is not. Training stores a salted hash of every training prompt (normalised as the data step's split normalises
it) in the model's data_report.json, under `train_prompts`; evaluation hashes its own prompts the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.data.pairs import factorize, prompt_keys

HASH = "blake2b-64(salt + NUL + normalised prompt), sorted, base64"
NORMALISATION = "case/whitespace-normalised, as the data step's split"


def _hashes(keys: Iterable[str], salt: str) -> np.ndarray:
    digests = b"".join(hashlib.blake2b(f"{salt}\x00{k}".encode(), digest_size=8).digest() for k in keys)
    return np.frombuffer(digests, dtype="<u8")


def _normalised_prompts(prompts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Normalised key id of every prompt and the distinct keys."""
    text = prompts.cast(pa.large_string())
    code, distinct = factorize(text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text)
    key_of, keys = prompt_keys(distinct)
    return key_of[code], keys


def train_prompts_record(prompts: pa.Array | pa.ChunkedArray, salt: str) -> dict[str, Any]:
    """The `train_prompts` entry of data_report.json: one salted 8-byte hash per distinct normalised training prompt
    (the prompts themselves are not stored; the salt keeps the hashes from matching other models' or lookup tables)."""
    _, keys = _normalised_prompts(prompts)
    hashes = np.sort(_hashes(keys, salt))
    return {
        "count": len(keys),
        "normalisation": NORMALISATION,
        "hash": HASH,
        "salt": salt,
        "hashes": base64.b64encode(hashes.astype("<u8").tobytes()).decode("ascii"),
    }


@dataclass(frozen=True)
class Overlap:
    """How many evaluation pairs (and prompts) come from training prompts; `known` is False when it cannot be said."""

    known: bool
    num_pairs: int
    num_prompts: int
    train_pairs: int = 0
    train_prompts: int = 0
    note: str = ""
    left_out: int = 0  # pairs from training prompts left out before scoring (--heldout_only)
    mask: np.ndarray | None = None  # per pair: from a training prompt

    @property
    def held_out(self) -> bool:
        return self.known and self.train_pairs == 0

    def warning(self) -> str:
        """The one warning line for stderr (empty for a held-out run)."""
        if not self.known:
            return f"warning: overlap with the model's training data is unknown: {self.note}"
        if self.train_pairs == 0:
            return ""
        return (
            f"warning: {self.train_pairs} of {self.num_pairs} pairs ({self.train_prompts} of {self.num_prompts} "
            "prompts) come from prompts the model was trained on, so this is not a held-out evaluation; add "
            "--heldout_only to score only the others"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "known": self.known,
            "held_out": self.held_out,
            "pairs_from_training_prompts": self.train_pairs if self.known else None,
            "prompts_from_training": self.train_prompts if self.known else None,
            "num_pairs": self.num_pairs,
            "num_prompts": self.num_prompts,
            **({"note": self.note} if self.note else {}),
            **({"pairs_left_out": self.left_out} if self.left_out else {}),
        }


NO_REPORT = "there is no data_report.json in the model folder (a model trained elsewhere)"


def training_overlap(
    pairs: pd.DataFrame, data_report: dict[str, Any] | None, *, missing: str = NO_REPORT, fingerprint: str = ""
) -> Overlap:
    """Pairs whose normalised prompt is one of the model's training prompts, per its data_report.json.

    Without one (`missing` says why), or with one that lists no training prompts, the overlap is unknown; the data
    fingerprint then still tells when the data is the very file the model was trained on.
    """
    key_of, keys = _normalised_prompts(pa.array(pairs["prompt"].tolist(), pa.large_string()))
    unknown = Overlap(False, len(pairs), len(keys), note=missing)
    if data_report is None:
        return unknown
    record = data_report.get("train_prompts")
    if not isinstance(record, dict) or not isinstance(record.get("hashes"), str):
        same = bool(fingerprint) and fingerprint == data_report.get("fingerprint")
        note = "the model's data_report.json does not list its training prompts (saved by an older version)"
        return replace(unknown, note=note + ("; the data is the file it was trained on" if same else ""))
    trained = np.frombuffer(base64.b64decode(record["hashes"]), dtype="<u8")
    in_train = np.isin(_hashes(keys, str(record.get("salt", ""))), trained)
    mask = in_train[key_of]
    return Overlap(True, len(pairs), len(keys), int(mask.sum()), int(in_train.sum()), mask=mask)


def model_data_report(model: str) -> tuple[dict[str, Any] | None, str]:
    """The data_report.json saved with a model (a directory, or a Hub repo when reachable), or None and why not."""
    local = Path(model)
    if local.is_dir():
        path = local / "data_report.json"
        if not path.is_file():
            return None, NO_REPORT
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "data_report.json"))
        except Exception:  # noqa: BLE001 - any Hub failure only means the overlap is unknown
            return None, "data_report.json could not be fetched from the Hub"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"the model's data_report.json is unreadable ({type(err).__name__})"
    return (report, "") if isinstance(report, dict) else (None, "the model's data_report.json is not a JSON object")
