"""The one encoding of a (prompt, answer) pair, shared by training, evaluation and scoring.

It is exactly the Quick Start call, `tokenizer(prompt, answer, truncation=True, max_length=L)`, i.e.
`[CLS] prompt [SEP] answer [SEP]`, so the score a user computes is the score that was trained. Over-long pairs are
cut by the tokenizer's `longest_first` strategy from its `truncation_side` (saved with the tokenizer): the longer
part is shortened first, so a long prompt is cut before the answer is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    input_ids: list[list[int]]
    truncated: list[bool]  # any token of the pair was cut
    answer_truncated: list[bool]  # tokens of the answer itself were cut


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    max_length: int,
    batch_size: int = 4096,
) -> Encoded:
    """Encode (prompt, answer) pairs exactly as `tokenizer(prompt, answer, truncation=True, max_length=L)`."""
    input_ids: list[list[int]] = []
    truncated: list[bool] = []
    answer_truncated: list[bool] = []
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for start in range(0, len(prompts), batch_size):
        p = list(prompts[start : start + batch_size])
        a = list(answers[start : start + batch_size])
        ids = tokenizer(p, a, truncation=True, max_length=max_length)["input_ids"]
        input_ids.extend(ids)
        cut = [False] * len(ids)
        answer_cut = [False] * len(ids)
        # Only a pair that fills max_length can have been cut: tokenize just those again, untruncated, to tell
        # whether it was and whether the answer lost tokens (scoring and training skip two full passes).
        full = [i for i, seq in enumerate(ids) if len(seq) >= max_length]
        if full:
            p_len = [
                len(x) for x in tokenizer([p[i] for i in full], add_special_tokens=False, verbose=False)["input_ids"]
            ]
            a_len = [
                len(x) for x in tokenizer([a[i] for i in full], add_special_tokens=False, verbose=False)["input_ids"]
            ]
            for i, lp, la in zip(full, p_len, a_len, strict=True):
                cut[i] = lp + la + specials > len(ids[i])
                answer_cut[i] = cut[i] and _answer_length(ids[i], tokenizer) < la
        truncated.extend(cut)
        answer_truncated.extend(answer_cut)
    return Encoded(input_ids, truncated, answer_truncated)


def _answer_length(ids: list[int], tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens between the first and last [SEP] of `[CLS] prompt [SEP] answer [SEP]`."""
    sep = tokenizer.sep_token_id
    if sep is None or sep not in ids:  # not a BERT-style tokenizer: no way to locate the answer
        return 0
    first = ids.index(sep)
    return len(ids) - first - 2


@dataclass
class EncodedPairs:
    """Each distinct (prompt, answer) encoded once; pairs index into `texts`."""

    texts: Encoded
    chosen: np.ndarray  # index into texts.input_ids, one per pair
    rejected: np.ndarray

    @property
    def truncated_pairs(self) -> np.ndarray:
        cut = np.asarray(self.texts.truncated, dtype=bool)
        return cut[self.chosen] | cut[self.rejected]

    @property
    def answer_truncated_pairs(self) -> np.ndarray:
        cut = np.asarray(self.texts.answer_truncated, dtype=bool)
        return cut[self.chosen] | cut[self.rejected]


@dataclass
class DistinctTexts:
    """Each distinct (prompt, answer) of a frame of pairs once, in order of first appearance; pairs index into it."""

    prompts: list[str]
    answers: list[str]
    chosen: np.ndarray  # index into prompts/answers, one per pair
    rejected: np.ndarray


def distinct_texts(pairs: pd.DataFrame) -> DistinctTexts:
    """The distinct (prompt, answer) texts of a frame with columns prompt, chosen, rejected."""
    n = len(pairs)
    prompts = np.concatenate([pairs["prompt"].to_numpy(), pairs["prompt"].to_numpy()])
    answers = np.concatenate([pairs["chosen"].to_numpy(), pairs["rejected"].to_numpy()])
    codes, _ = pd.factorize(pd.Series(prompts, dtype=object) + "\x00" + pd.Series(answers, dtype=object))
    first = np.full(codes.max() + 1 if n else 0, -1)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # first occurrence of each distinct text
    return DistinctTexts(prompts[first].tolist(), answers[first].tolist(), codes[:n], codes[n:])


def encode_preference_pairs(tokenizer: PreTrainedTokenizerBase, pairs: pd.DataFrame, max_length: int) -> EncodedPairs:
    """Encode a frame with columns prompt, chosen, rejected; an answer shared by several pairs is encoded once."""
    distinct = distinct_texts(pairs)
    texts = encode_pairs(tokenizer, distinct.prompts, distinct.answers, max_length)
    return EncodedPairs(texts=texts, chosen=distinct.chosen, rejected=distinct.rejected)
