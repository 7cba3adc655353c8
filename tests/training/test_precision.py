"""The training precision a run picks and the one line it prints about it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.core import precision
from pipeline.training import run


@pytest.mark.parametrize(
    ("bf16", "native", "expected"),
    [
        (True, True, "bf16 autocast (CPU with AVX512-BF16/AMX)"),
        (True, False, "bf16 autocast, emulated (no bf16 here; fp32 may be faster)"),
        (False, True, "fp32 (bf16 would be native here: CPU with AVX512-BF16/AMX; bf16: auto uses it)"),
        (False, False, "fp32 (no bf16 here)"),
    ],
)
def test_the_precision_line_says_what_runs_and_why(monkeypatch, bf16: bool, native: bool, expected: str) -> None:
    where = "CPU with AVX512-BF16/AMX" if native else "no bf16 here"
    monkeypatch.setattr(run, "native_bf16", lambda use_cpu: (native, where))
    args = SimpleNamespace(bf16=bf16, fp16=False, device=torch.device("cpu"))
    assert run.precision_line(args) == expected


def test_native_bf16_follows_the_cpu_when_there_is_no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    for has in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda has=has: has)
        assert precision.native_bf16()[0] is has
