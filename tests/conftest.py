"""Offline fixtures: a tiny random DistilBERT reward model and tokenizer, and small ranked files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def _bind_library_log_handlers() -> None:
    """transformers and datasets create their stderr log handler on first use, holding whatever sys.stderr is then.
    Created inside a test that captures output (capsys), it writes to a closed stream in later tests ("--- Logging
    error ---" plus a traceback on stderr, which breaks the no-traceback checks): create them now, at collection."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers")
    datasets_logging.get_logger("datasets")


_bind_library_log_handlers()

WORDS = (
    "the a an is are was be to of and or in on for with what how why who which best answer prompt good bad "
    "python code list sort cook pasta water boil salt travel city rome paris science light speed sky blue red "
    "because it this that you your i we they can not no yes please help write story short long human assistant"
).split()


def build_tiny_model(target: Path, seed: int = 0) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *".,!?'\"-:;()", *(f"##{c}" for c in chars), *WORDS]
    vocab_file = target / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = DistilBertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=512)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=1, pad_token_id=0
    )
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
