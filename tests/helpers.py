"""Shared test helpers: the repository root, a tiny random DistilBERT reward model, small files, CLI runners."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# Exit code 130 as a shell's `$?` reports it. Under `python -m`, CPython ends the process by SIGINT itself when the
# caught interrupt had passed through an exec of a string (a dataclass being built while importing): Popen reads -2.
INTERRUPTED_EXIT = (130, -signal.SIGINT)


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


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_module(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from the repository root, offline, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


def write_recipe(path: Path, model_dir: Path, output_dir: Path, **extra: object) -> Path:
    lines = {
        "model_name_or_path": str(model_dir),
        "dataset_path": str(REPO / "data/answers.csv"),
        "output_dir": str(output_dir),
        "test_size": 0.2,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 16,
        "learning_rate": 1e-3,
        "max_length": 512,
        "logging_steps": 5,
        "report_to": "none",
        **extra,
    }
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in lines.items()))
    return path


def launch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    return subprocess.run([*ACCELERATE, "pipeline/train.py", *args], cwd=REPO, env=env, capture_output=True, text=True)


LONG_PROMPT = "human: " + "the sky is blue because of light " * 120 + "what about red"
PAIRS = [
    ("How do I boil an egg?", "Put the egg in boiling water for 9 minutes."),
    ("How do I boil an egg?", "Fry it."),
    ("why is the sky blue", "because of light"),
    ("write a short story", "once upon a time a city by the water"),
    (LONG_PROMPT, "because the sky is blue"),  # > 512 tokens: truncated exactly as the Quick Start does
    ("", "an empty prompt"),
    ("why is the sky blue", "i can not help with that"),
]


def quick_start(model_dir: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The README's Quick Start loop, one pair at a time: the scores every scoring path must reproduce."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    scores = []
    for prompt, response in pairs:
        inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            scores.append(model(**inputs).logits.item())
    return np.asarray(scores)


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_causal_lm(target: Path, seed: int = 0) -> Path:
    """A tiny random GPT-2 and a word-level tokenizer with a chat template: a policy for GRPO tests, offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *dict.fromkeys(WORDS), ":", "?", "."])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", model_max_length=128
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)  # fmt: skip
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def score_cli(*args: str) -> int:
    """`python -m pipeline.score ARGS --no_progress` in-process (stderr is read with capsys): the exit code."""
    from pipeline.score.cli import main

    try:
        main([*args, "--no_progress"])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
