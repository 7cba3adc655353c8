"""Offline fixtures: a tiny random DistilBERT reward model and tokenizer, and small ranked files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import PAIRS, build_tiny_model, quick_start

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _bind_library_log_handlers() -> None:
    """transformers and datasets create their stderr log handler on first use, holding whatever sys.stderr is then.
    Created inside a test that captures output (capsys), it writes to a closed stream in later tests ("--- Logging
    error ---" plus a traceback on stderr, which breaks the no-traceback checks): create them now, at collection."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers")
    datasets_logging.get_logger("datasets")


_bind_library_log_handlers()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path):
    """The Quick Start loop's scores of PAIRS with the tiny model: what every scoring path must reproduce."""
    return quick_start(tiny_model_dir, PAIRS)
