"""Training encoding == the Quick Start call, and long pairs are cut, never dropped."""

from __future__ import annotations

import pandas as pd
from transformers import AutoTokenizer

from pipeline.model.encoding import encode_pairs, encode_preference_pairs


def test_encoding_is_exactly_the_quick_start_call(tiny_tokenizer) -> None:
    prompts = ["What is the best way to boil pasta?", "Write a short story", "why is the sky blue"]
    answers = ["Boil water, add salt.", "Once upon a time...", "Because of light!"]
    encoded = encode_pairs(tiny_tokenizer, prompts, answers, max_length=512)
    for prompt, answer, ids in zip(prompts, answers, encoded.input_ids, strict=True):
        expected = tiny_tokenizer(prompt, answer, return_tensors="pt", truncation=True, max_length=512)
        assert ids == expected["input_ids"][0].tolist()
        text = tiny_tokenizer.decode(ids)
        assert text.startswith("[CLS] ") and text.count("[SEP]") == 2 and text.endswith("[SEP]")
    assert encoded.truncated == [False, False, False]


def test_long_pairs_are_truncated_not_dropped_and_counted(tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, truncation_side="left", model_max_length=32)
    long_prompt = "human: " + "the sky is blue " * 40 + "what about red"
    long_answer = "because " * 60
    prompts, answers = [long_prompt, "short", long_prompt], ["a good answer", long_answer, long_answer]
    encoded = encode_pairs(tokenizer, prompts, answers, max_length=32)
    assert [len(x) for x in encoded.input_ids] == [32, 32, 32]
    assert encoded.truncated == [True, True, True]
    assert encoded.answer_truncated == [False, True, True]
    # The prompt is cut from the left: its end, next to the answer, survives; the answer is whole.
    first = tokenizer.decode(encoded.input_ids[0])
    assert "what about red [SEP] a good answer [SEP]" in first
    # Identical to what a user gets from the saved tokenizer with the Quick Start call.
    for prompt, answer, ids in zip(prompts, answers, encoded.input_ids, strict=True):
        assert ids == tokenizer(prompt, answer, truncation=True, max_length=32)["input_ids"]
    # A pair of exactly max_length tokens fills the limit without being cut: not counted.
    exact = encode_pairs(tokenizer, ["short", "short"], ["because " * 28, "because " * 29], max_length=32)
    assert [len(x) for x in exact.input_ids] == [32, 32]
    assert exact.truncated == [False, True] and exact.answer_truncated == [False, True]


def test_shared_answers_are_encoded_once(tiny_tokenizer) -> None:
    pairs = pd.DataFrame(
        {"prompt": ["p", "p", "p"], "chosen": ["a", "a", "b"], "rejected": ["b", "c", "c"], "margin": [1.0] * 3}
    )
    encoded = encode_preference_pairs(tiny_tokenizer, pairs, max_length=64)
    assert len(encoded.texts.input_ids) == 3
    ids = encoded.texts.input_ids
    assert [ids[i] for i in encoded.chosen] == [tiny_tokenizer("p", x)["input_ids"] for x in ["a", "a", "b"]]
    assert [ids[i] for i in encoded.rejected] == [tiny_tokenizer("p", x)["input_ids"] for x in ["b", "c", "c"]]
