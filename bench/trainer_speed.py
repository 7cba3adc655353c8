"""Training speed and accuracy: stock TRL RewardTrainer vs our pairwise and ranking objectives, in one run.

    python bench/trainer_speed.py [--epochs 1] [--k4_prompts 300] [--hh PATH]

(a) stock: `RewardTrainer` used as TRL's docs show, on text columns (prompt, chosen, rejected), with the settings it
    needs to run here at all: `eos_token="[SEP]"` (DistilBERT has none), bf16 only where native (`use_cpu` on CPU-only
    machines, transformers' condition for bf16 there), `max_length=512`
    (DistilBERT's limit; TRL drops longer pairs). Everything else is TRL's default (activation checkpointing on,
    random batches).
(b) ours, `objective: pairwise`; (c) ours, `objective: ranking`. Both with the recipe defaults of this repo
(length-grouped batches, each batch's forward run as near-equal-length pieces on CPU); "pairwise-random" is (b)
with random batches and "pairwise-unchunked" (b) with one padded forward per batch, to show what each is worth;
"pairwise-fp32" is (b) with `bf16: false` (the recipe's `bf16: auto` picks bf16 where the hardware has it);
"pairwise-bf16-attention" is (b) with attention left in bf16 under autocast (pipeline/training/attention.py off).
All three: the embedded pretrained DistilBERT, same data, seed, epochs, learning rate and batch size (pairs for a/b,
prompts for c). Also measured: the unpadded forward+backward ceiling of the same model and precision (fp32 or bf16
autocast) on the same training sequences (the first 300), one sequence at a time, in equal-length batches (8 rows; up
to 4,096 tokens / 64 rows) and in the trainer's shape without padding (16 rows of neighbouring lengths cut to the
shortest), each timed on a second pass (bf16 kernels are prepared once per shape), with the trainer's attention
(fp32 under CPU autocast).

Prints Markdown tables; writes bench/results/trainer_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import HH_CSV, REPO, machine, require, use_all_cores
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import RewardConfig, RewardTrainer

from pipeline.core.precision import native_bf16
from pipeline.data import build_dataset
from pipeline.evaluation.accuracy import evaluate_pairs
from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model
from pipeline.model.encoding import encode_preference_pairs
from pipeline.model.scorer import RewardScorer
from pipeline.recipe.config import PipelineRewardConfig
from pipeline.training import (
    GroupCollator,
    PairwiseRewardTrainer,
    RankingRewardTrainer,
    pairwise_dataset,
    ranking_dataset,
)
from pipeline.training import trainer as trainer_module
from pipeline.training.attention import fp32_attention_on_cpu

WORDS = (
    "the quick answer explains how water boils when heated at sea level and why salt changes the taste of pasta "
    "a good reply is short clear correct and kind while a bad one rambles or refuses without reason or is wrong"
).split()


def k4_file(path: Path, prompts: int, seed: int = 0) -> Path:
    """K=4 ranked answers per prompt, random words (speed only): prompts ~20 words, answers 20-80 words."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(prompts):
        prompt = f"question {p}: " + " ".join(rng.choice(WORDS, 20))
        for rank in range(1, 5):
            rows.append((prompt, " ".join(rng.choice(WORDS, int(rng.integers(20, 80)))), rank))
    pd.DataFrame(rows, columns=["prompt", "answer", "rank"]).to_csv(path, index=False)
    return path


def config(out: Path, epochs: float, batch: int, **overrides) -> PipelineRewardConfig:
    return PipelineRewardConfig(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=batch, learning_rate=5e-5,
        warmup_steps=0.1, weight_decay=0.01, seed=42, logging_steps=10, report_to="none", disable_tqdm=True,
        save_strategy="no", **overrides,
    )  # fmt: skip


def stock_eval(model, tokenizer, pairs: pd.DataFrame) -> float:
    """Held-out accuracy of the stock model, scored with the encoding it was trained on (TRL's text path)."""
    ids = [tokenizer(text=p + a + "[SEP]")["input_ids"][:512] for p, a in zip(pairs.prompt, pairs.chosen, strict=True)]
    ids += [
        tokenizer(text=p + a + "[SEP]")["input_ids"][:512] for p, a in zip(pairs.prompt, pairs.rejected, strict=True)
    ]
    scores = RewardScorer(model, tokenizer, device=None, batch_size=32).score_ids(ids)
    n = len(pairs)
    return float((scores[:n] > scores[n:]).mean())


def run_variant(name: str, base: str, data: Path, epochs: float, batch: int, work: Path) -> dict:
    dataset, _ = build_dataset(data, test_size=0.2, split_seed=42)
    train, test = dataset["train"].to_pandas(), dataset["test"].to_pandas()
    tokenizer = AutoTokenizer.from_pretrained(base, truncation_side="left", model_max_length=512)
    set_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    out = work / name
    if name == "stock":
        stock_args = RewardConfig(
            output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=batch, learning_rate=5e-5,
            warmup_steps=0.1, weight_decay=0.01, seed=42, logging_steps=10, report_to="none", disable_tqdm=True,
            save_strategy="no", eos_token="[SEP]", bf16=native_bf16()[0], use_cpu=not torch.cuda.is_available(),
            max_length=512,
        )  # fmt: skip
        trainer = RewardTrainer(
            model=model, args=stock_args, processing_class=tokenizer,
            train_dataset=Dataset.from_pandas(train[["prompt", "chosen", "rejected"]]),
        )  # fmt: skip
    else:
        encoded = encode_preference_pairs(tokenizer, train, 512)
        sampling = "random" if name.endswith("random") else "group_by_length"
        args = config(out, epochs, batch, train_sampling_strategy=sampling, bf16=False if "fp32" in name else None,
                      length_chunked_forward=not name.endswith("unchunked"))  # fmt: skip
        if name == "ranking":
            trainer = RankingRewardTrainer(model=model, args=args, train_dataset=ranking_dataset(train, encoded),
                                           processing_class=tokenizer,
                                           data_collator=GroupCollator(tokenizer.pad_token_id))  # fmt: skip
        else:
            trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=pairwise_dataset(encoded, None),
                                            processing_class=tokenizer)  # fmt: skip
    started = time.perf_counter()
    if name.endswith("bf16-attention"):  # what fp32 attention on CPU is worth: the loop without it
        trainer_module.fp32_attention_on_cpu = lambda model, enabled: contextlib.nullcontext()
    trainer.train()
    trainer_module.fp32_attention_on_cpu = fp32_attention_on_cpu
    wall = time.perf_counter() - started
    tokens = trainer._total_train_tokens
    if name == "stock":
        accuracy = stock_eval(trainer.model, tokenizer, test)
    else:
        accuracy = evaluate_pairs(trainer.model, tokenizer, test, 512)["pairwise_accuracy"]
    return {
        "variant": name,
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "data": data.name,
        "epoch_s": wall / epochs,
        "real_tokens_per_s": tokens / wall,
        "real_tokens_per_epoch": tokens / epochs,
        "held_out_accuracy": accuracy,
        "held_out_pairs": len(test),
    }


def ceiling(base: str, data: Path, limit: int = 300, precision: str = "fp32") -> dict:
    """Unpadded forward+backward tokens/s on training sequences (fp32, or under bf16 autocast): batch 1, and
    equal-length batches of 8 and of up to 4,096 tokens."""
    dataset, _ = build_dataset(data, test_size=0.2, split_seed=42)
    train = dataset["train"].to_pandas()
    tokenizer = AutoTokenizer.from_pretrained(base, truncation_side="left", model_max_length=512)
    ids = encode_preference_pairs(tokenizer, train, 512).texts.input_ids[:limit]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.train()
    for module in model.modules():  # same as the trainers: dropout off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0

    def step(batch: list[list[int]]) -> int:
        x = torch.tensor(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
        return x.numel()

    def rate(batches: list[list[list[int]]]) -> float:
        # Second pass timed: oneDNN prepares bf16 kernels once per new shape, which a training run amortises.
        for batch in batches:
            step(batch)
        started, tokens = time.perf_counter(), sum(step(b) for b in batches)
        return tokens / (time.perf_counter() - started)

    # The trainer's attention (fp32 under CPU autocast), so that the ceiling is of the same computation.
    with fp32_attention_on_cpu(model, precision == "bf16"):
        return _ceiling_rates(ids, rate, data, precision)


def _ceiling_rates(ids: list[list[int]], rate: Callable, data: Path, precision: str) -> dict:
    single = rate([[seq] for seq in ids])
    buckets: dict[int, list[list[int]]] = {}
    for seq in ids:
        buckets.setdefault(len(seq), []).append(seq)
    rates = {}
    for name, rows in (
        ("equal_length_batches_tokens_per_s", lambda n: 8),
        ("equal_length_4096_token_batches_tokens_per_s", lambda n: max(1, min(64, 4096 // n))),
    ):
        rates[name] = rate([b[i : i + rows(n)] for n, b in buckets.items() for i in range(0, len(b), rows(n))])
    # The trainer's batch shape without its padding: 16 rows of neighbouring lengths, each cut to the shortest.
    ordered = sorted(ids, key=len)
    groups = [ordered[i : i + 16] for i in range(0, len(ordered), 16)]
    rates["sorted_16_rows_tokens_per_s"] = rate([[seq[: len(group[0])] for seq in group] for group in groups])
    return {"data": data.name, "precision": precision, "sequences": len(ids), "batch1_tokens_per_s": single, **rates,
            "ceiling_tokens_per_s": max(single, *rates.values())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--k4_prompts", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hh", type=Path, default=HH_CSV)
    parser.add_argument("--skip_hh", action="store_true")
    parser.add_argument("--skip_k4", action="store_true")
    parser.add_argument("--variants", default="stock,pairwise,pairwise-random,pairwise-unchunked,ranking")
    parser.add_argument("--no_ceiling", action="store_true", help="skip the fwd+bwd ceiling measurement")
    parser.add_argument("--ceilings", default="fp32", help="precisions of the ceiling: fp32,bf16")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/trainer_speed.json")
    args = parser.parse_args()
    use_all_cores()
    base = resolve_base_model(EMBEDDED_BASE_MODEL)
    rows, ceilings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = [] if args.skip_k4 else [k4_file(work / "k4.csv", args.k4_prompts)]
        if not args.skip_hh and (args.hh.is_file() or args.skip_k4):
            sets.append(require(args.hh, "--hh"))
        for data in sets:
            for precision in [] if args.no_ceiling else args.ceilings.split(","):
                ceilings.append(ceiling(base, data, precision=precision))
                print(ceilings[-1], flush=True)
            for name in args.variants.split(","):
                if name:
                    rows.append(run_variant(name, base, data, args.epochs, args.batch, work))
                    print(rows[-1], flush=True)
    result = {"machine": machine(), "epochs": args.epochs, "batch": args.batch, "runs": rows, "ceilings": ceilings}
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| data | variant | precision | s/epoch | vs stock | real tokens/epoch | real tokens/s | held-out acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        stock = next((x for x in rows if x["data"] == r["data"] and x["variant"] == "stock"), None)
        speedup = f"{stock['epoch_s'] / r['epoch_s']:.2f}x" if stock else "n/a"
        print(
            f"| {r['data']} | {r['variant']} | {r['precision']} | {r['epoch_s']:.1f} | {speedup} "
            f"| {r['real_tokens_per_epoch']:.0f} | {r['real_tokens_per_s']:.0f} | {r['held_out_accuracy']:.3f} |"
        )
    print(
        "\n| data | precision | fwd+bwd, batch 1 | equal-len x8 | equal-len ≤4096 tok | 16 rows, cut | ours / ceiling |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in ceilings:
        ours = [x for x in rows if x["data"] == c["data"] and x["variant"].startswith("pairwise")
                and x["precision"] == c["precision"] and "random" not in x["variant"]]  # fmt: skip
        ratio = ", ".join(f"{x['variant']} {x['real_tokens_per_s'] / c['ceiling_tokens_per_s']:.2f}" for x in ours)
        print(
            f"| {c['data']} | {c['precision']} | {c['batch1_tokens_per_s']:.0f} "
            f"| {c['equal_length_batches_tokens_per_s']:.0f} | {c['equal_length_4096_token_batches_tokens_per_s']:.0f} "
            f"| {c['sorted_16_rows_tokens_per_s']:.0f} "
            f"| {ratio or 'n/a'} |"
        )


if __name__ == "__main__":
    main()
