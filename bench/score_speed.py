"""Scoring speed: the README's Quick Start loop vs `pipeline.score.RewardScorer`, on the same HH-RLHF pairs.

    python bench/score_speed.py [--model DIR] [--pairs 1000] [--device auto] [--precisions fp32,bf16,fp16]

One run. The model is `--model`, or the embedded pretrained DistilBERT (random reward head: speed and agreement are
what is measured). The pairs are the first `--pairs` (prompt, chosen, rejected) of
../shared/data/hh_harmless_dev.jsonl; each pair is two sequences. The Quick Start loop and each precision are timed
on the same chunks of pairs, interleaved (`--rounds`, 3 on CPU), so a load change on a shared machine hits all of
them alike; compare modes by their ratio to the loop of the same run. Prints a markdown table (`--json FILE` too).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import HH_JSONL, machine, require

from pipeline.model.batching import plan_batches
from pipeline.model.scorer import RewardScorer, cpu_has_native_bf16, resolve_device, resolve_precision


def load_pairs(path: Path, n: int) -> tuple[list[str], list[str], list[str]]:
    """The first `n` (prompt, chosen, rejected) pairs. A pairwise JSONL/CSV is read with pandas alone (no datasets
    package, so the script runs on a bare GPU image); a ranked file goes through the data step's pairing."""
    frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path, keep_default_na=False)
    if {"prompt", "chosen", "rejected"} <= set(frame.columns):
        pairs = frame
    else:
        from pipeline.data import read_pairs

        pairs, _ = read_pairs(path)
    pairs = pairs.iloc[:n]
    return pairs["prompt"].tolist(), pairs["chosen"].tolist(), pairs["rejected"].tolist()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quick_start_loop(model, tokenizer, prompts, responses, device) -> np.ndarray:
    """The README's Quick Start, one pair at a time (model and inputs on `device`)."""
    scores = []
    for prompt, response in zip(prompts, responses, strict=True):
        inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=512).to(device)
        with torch.no_grad():
            scores.append(model(**inputs).logits.item())
    return np.asarray(scores)


def model_flops(model, lengths: list[int]) -> float:
    """Multiply-add FLOPs of the encoder on unpadded sequences: 2 x (Linear weights) per token, plus the attention
    products (QK^T and AV: 4 x L^2 x width per layer). The head runs once per sequence and is left out."""
    body = model.base_model
    per_token = 2 * sum(m.weight.numel() for m in body.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    layers = getattr(config, "n_layers", None) or config.num_hidden_layers
    width = getattr(config, "dim", None) or config.hidden_size
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(per_token * lengths.sum() + 4 * layers * width * (lengths**2).sum())


def first_token_flops(model, lengths: list[int]) -> float:
    """`model_flops` less what the scorer's first-token last layer skips: that layer's query, output and
    feed-forward products for every token but the first, and its attention rows for them."""
    last = model.base_model.transformer.layer[-1]
    skipped = [last.attention.q_lin, last.attention.out_lin, last.ffn.lin1, last.ffn.lin2]
    per_token = 2 * sum(m.weight.numel() for m in skipped)
    width = model.config.dim
    lengths = np.asarray(lengths, dtype=np.float64)
    skipped_attention = 4 * width * (lengths * (lengths - 1)).sum()
    return model_flops(model, lengths) - float(per_token * (lengths - 1).sum() + skipped_attention)


def matmul_ceiling(model, device: torch.device) -> float:
    """FLOP/s of the model's own feed-forward matrix products on one large fp32 batch (4,096 tokens): what dense
    fp32 arithmetic reaches on this machine, the ceiling for any fp32 scorer of this model."""
    shapes = [m.weight.shape for m in model.base_model.modules() if isinstance(m, torch.nn.Linear)]
    out_features, in_features = max(shapes, key=lambda s: s[0] * s[1])
    a = torch.randn(4096, in_features, device=device)
    w1 = torch.randn(in_features, out_features, device=device)
    w2 = torch.randn(out_features, in_features, device=device)
    flops = 2 * 2 * 4096 * in_features * out_features
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(5):
            (a @ w1) @ w2
        sync(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return flops / best


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="reward model directory (default: the embedded DistilBERT, random head)")
    parser.add_argument("--data", default=str(HH_JSONL))  # the same 807 pairs as the .csv, already paired
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precisions",
        help="comma-separated scorer precisions (default: fp32,bf16,fp16 on GPU; fp32,bf16 on CPUs with bf16 "
        "hardware; fp32 on other CPUs, where bf16/fp16 autocast is emulated and several times slower than fp32)",
    )
    parser.add_argument(
        "--rounds", type=int, help="chunks of pairs; the modes take turns on each (default: 3 on CPU, 1 on GPU)"
    )
    parser.add_argument("--repeats", type=int, help="timed passes, median reported (default: 3 on GPU, 1 on CPU)")
    parser.add_argument(
        "--chunk_sizes",
        help="comma-separated sequences encoded at a time, each an extra `auto` mode (default on GPU: 1024,512, "
        "beside the scorer's own 16,384: how much overlapping tokenization with the GPU gains)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also an int8 mode (CPU): torch's dynamic quantisation of the encoder's Linear layers, per-channel "
        "weights; tried as a faster-than-fp32 CPU mode and rejected (see bench/RESULTS.md)",
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="write the model (fp16 weights, half the size; scored in fp32) and the pairs to DIR, then stop: what a "
        "bare GPU machine needs (no ../shared, no embedded-model package there). Then, there: "
        "python3 bench/score_speed.py --model DIR --data DIR/pairs.jsonl",
    )
    parser.add_argument(
        "--no_full_forward",
        action="store_true",
        help="leave out the `auto, full forward` mode (the scorer with the model's own forward instead of the "
        "first-token last layer), timed by default to measure what that saves",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser, parser.parse_args()


def load_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple:
    """(model in fp32 on the device, tokenizer, its path, device)."""
    from pipeline.model.loading import load_reward_model

    if args.model:
        model_path = args.model
    else:
        from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model

        model_path = resolve_base_model(EMBEDDED_BASE_MODEL)
    device = resolve_device(args.device)
    if args.int8 and device.type != "cpu":  # before loading anything
        parser.error("--int8 is a CPU mode (torch's dynamic quantisation runs on the CPU only); add --device cpu")
    model, tokenizer = load_reward_model(model_path)
    model = model.to(device=device, dtype=torch.float32).eval()
    return model, tokenizer, model_path, device


def export(model, tokenizer, prompts: list[str], chosen: list[str], rejected: list[str], target: Path) -> None:
    """The model in fp16 and the pairs as JSONL in `target`: what a bare GPU machine needs."""
    model.to(torch.float16).save_pretrained(target)
    tokenizer.save_pretrained(target)
    pd.DataFrame({"prompt": prompts, "chosen": chosen, "rejected": rejected}).to_json(
        target / "pairs.jsonl", orient="records", lines=True, force_ascii=False
    )
    print(f"wrote the model and {len(prompts)} pairs to {target}")


def make_scorers(model, tokenizer, device, args, parser) -> tuple[dict[str, RewardScorer], str]:
    """The scorer modes to time, by name, and the precision `auto` resolves to on this device."""
    if device.type == "cuda":
        default_precisions = "fp32,bf16,fp16"
    else:  # fp16 is emulated on CPUs (several times slower than fp32), bf16 too without bf16 hardware
        default_precisions = "fp32,bf16" if cpu_has_native_bf16() else "fp32"
    precisions = [p.strip() for p in (args.precisions or default_precisions).split(",")]
    auto = resolve_precision("auto", device)
    scorers = {p: RewardScorer(model, tokenizer, precision=p, device=device) for p in precisions}
    if not args.no_full_forward:
        scorers[f"{auto}, full forward"] = RewardScorer(
            model, tokenizer, precision=auto, device=device, first_token_only=False
        )
    chunk_sizes = args.chunk_sizes or ("1024,512" if device.type == "cuda" else "")
    for size in filter(None, chunk_sizes.split(",")):
        if int(size) < 1:
            parser.error(f"--chunk_sizes: {size} is not a positive number of sequences")
        scorer = RewardScorer(model, tokenizer, precision=auto, device=device)
        scorer.chunk_size = int(size)
        scorers[f"{auto}, chunks of {int(size)}"] = scorer
    if args.int8:
        scorers["int8 dynamic"] = int8_scorer(model, tokenizer, device)
    return scorers, auto


def int8_scorer(model, tokenizer, device) -> RewardScorer:
    """torch's dynamic int8 quantisation of a copy of the encoder's Linear layers (per-channel weights)."""
    import copy
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        body = {
            n: per_channel_dynamic_qconfig
            for n, m in model.base_model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
        quantized = copy.deepcopy(model)
        quantize_dynamic(quantized.base_model, body, inplace=True)
    # The model's forward: a quantised layer's activation scale depends on its whole input, so the first-token
    # last layer differs from it by more than rounding (and its start-up check would refuse it, with a warning).
    return RewardScorer(quantized, tokenizer, precision="fp32", device=device, first_token_only=False)


@dataclass
class Timing:
    """What the timed passes measured: per mode its first (warm-up) pass, its time per repeat and its scores."""

    first_pass: dict[str, float]
    times: dict[str, list[float]]
    scores: dict[str, np.ndarray]
    rounds: int
    repeats: int
    load: tuple[float, float]  # 1-minute load average before and after
    ceilings: list[float]  # fp32 matrix-product FLOP/s, measured between the rounds (CPU)


def time_modes(names: list[str], run: Callable, sequences: int, args, model, device) -> Timing:
    """Warm each mode up, then time every mode on the same chunks of sequences, taking turns within each chunk."""
    gpu = device.type == "cuda"
    # Warm-up, not timed: first calls load kernels and pick algorithms for each new shape. On a GPU that costs
    # seconds per mode, so each mode makes one whole pass first (timed apart as "first pass"); on CPU 16 sequences.
    first_pass = {}
    for name in names:
        start = time.perf_counter()
        run(name, slice(None) if gpu else slice(0, 16))
        sync(device)
        first_pass[name] = time.perf_counter() - start

    repeats = args.repeats or (3 if gpu else 1)
    rounds = args.rounds or (1 if gpu else 3)
    times = {name: [0.0] * repeats for name in names}
    scores = {name: np.empty(sequences) for name in names}
    bounds = np.linspace(0, sequences // 2, max(1, rounds) + 1).round().astype(int) * 2
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # The fp32 ceiling is measured between the rounds too: on a shared machine it moves with the load.
    ceilings = [] if gpu else [matmul_ceiling(model, device)]
    for repeat in range(repeats):
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            chunk = slice(int(lo), int(hi))
            for name in names:
                start = time.perf_counter()
                out = run(name, chunk)
                sync(device)
                times[name][repeat] += time.perf_counter() - start
                scores[name][chunk] = out
            if not gpu:
                ceilings.append(matmul_ceiling(model, device))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return Timing(first_pass, times, scores, rounds, repeats, (load_before, load_after), ceilings)


def mode_rows(names: list[str], scorers: dict, auto: str, timing: Timing, done: dict[str, float]) -> list[dict]:
    """One row per mode: its median time, speed, speed-up over the loop and agreement with the loop's scores."""
    seconds = {name: float(np.median(timing.times[name])) for name in names}
    reference = timing.scores["Quick Start loop"]
    decision = reference[0::2] > reference[1::2]
    rows = []
    for name in names:
        s = timing.scores[name]
        label = name if name == "Quick Start loop" else f"scorer {name}" + (" (= auto)" if name == auto else "")
        rows.append(
            {
                "mode": label,
                "seconds": seconds[name],
                "seq_per_s": len(s) / seconds[name],
                "speedup": seconds["Quick Start loop"] / seconds[name],
                "max_abs_diff": float(np.abs(s - reference).max()),
                "pair_agreement": float(np.mean((s[0::2] > s[1::2]) == decision)),
                "first_token_only": bool(name in scorers and scorers[name]._first_token),
                "gflop_per_s": done[name] / seconds[name] / 1e9,
            }
        )
    return rows


def print_report(result: dict, scorer: RewardScorer, timing: Timing, useful: float, first_token: float) -> None:
    n, auto, rows, gpu = result["pairs"], result["auto"], result["rows"], result["first_pass_seconds"] is not None
    load_before, load_after = timing.load
    ceilings = timing.ceilings
    ceiling = max(ceilings) if ceilings else None
    print(
        f"{result['machine']}; {n} pairs = {2 * n} sequences, mean {result['mean_tokens']:.0f} tokens, "
        f"{result['truncated']} truncated to max_length; scorer padding {result['padding']:.1%}; auto = {auto}; "
        f"scorer chunks of {scorer.chunk_size} sequences; "
        f"1-min load average {load_before:.1f} -> {load_after:.1f}; {timing.rounds} round(s), median of "
        f"{timing.repeats} pass(es)"
    )
    if gpu:
        print("first (warm-up) pass, s: " + ", ".join(f"{k} {v:.2f}" for k, v in result["first_pass_seconds"].items()))
    print()
    print("| mode | seconds | sequences/s | × loop | GFLOP/s done | max abs diff vs loop | decisions = loop |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['seconds']:.1f} | {r['seq_per_s']:.1f} | {r['speedup']:.2f} | "
            f"{r['gflop_per_s']:.0f} | {r['max_abs_diff']:.1e} | {r['pair_agreement']:.2%} |"
        )
    if ceiling:
        loop = rows[0]["gflop_per_s"] * 1e9
        print(
            f"\nfp32 matrix-product ceiling on this machine: {min(ceilings) / 1e9:.0f}-{ceiling / 1e9:.0f} GFLOP/s "
            f"({useful / 1e9:.0f} GFLOP of model arithmetic here, {first_token / 1e9:.0f} with the last layer on the "
            f"first token only), i.e. at most {ceiling / loop:.2f}x the loop for an fp32 scorer doing all of the "
            f"model's arithmetic, {ceiling / loop * useful / first_token:.2f}x with the first-token last layer"
        )


def main() -> None:
    parser, args = parse_args()
    model, tokenizer, model_path, device = load_model(args, parser)
    prompts, chosen, rejected = load_pairs(require(Path(args.data)), args.pairs)
    if args.export:
        export(model, tokenizer, prompts, chosen, rejected, Path(args.export))
        return
    n = len(prompts)
    scorers, auto = make_scorers(model, tokenizer, device, args, parser)

    # Sequences pair by pair (chosen, rejected), so a chunk of sequences is a chunk of whole pairs.
    seq_prompts = [p for p in prompts for _ in (0, 1)]
    seq_responses = [r for pair in zip(chosen, rejected, strict=True) for r in pair]
    encoded = next(iter(scorers.values())).encode(seq_prompts, seq_responses)
    lengths = [len(x) for x in encoded.input_ids]
    names = ["Quick Start loop", *scorers]

    def run(name: str, part: slice) -> np.ndarray:
        if name == "Quick Start loop":
            return quick_start_loop(model, tokenizer, seq_prompts[part], seq_responses[part], device)
        return scorers[name].score(seq_prompts[part], seq_responses[part])

    timing = time_modes(names, run, 2 * n, args, model, device)
    useful = model_flops(model, lengths)
    first_token = first_token_flops(model, lengths) if getattr(model.config, "dim", None) else useful
    # Arithmetic each mode does: the first-token last layer skips part of the model's.
    done = {name: first_token if name in scorers and scorers[name]._first_token else useful for name in names}
    rows = mode_rows(names, scorers, auto, timing, done)
    scorer = next(iter(scorers.values()))
    padded = sum(
        len(b) * lengths[b[0]] for b in plan_batches(lengths, scorer.max_tokens, scorer.batch_size, scorer.max_padding)
    )
    result = {
        "machine": machine(),
        "model": str(model_path),
        "pairs": n,
        "sequences": 2 * n,
        "mean_tokens": float(np.mean(lengths)),
        "truncated": int(sum(encoded.truncated)),
        "padding": padded / sum(lengths) - 1,
        "auto": auto,
        "rounds": timing.rounds,
        "repeats": timing.repeats,
        "times": timing.times,
        "first_pass_seconds": timing.first_pass if device.type == "cuda" else None,
        "load_avg_1min": list(timing.load),
        "model_gflop": useful / 1e9,
        "first_token_gflop": first_token / 1e9,
        "fp32_matmul_ceiling_gflop_per_s": [c / 1e9 for c in timing.ceilings],
        "rows": rows,
    }
    print_report(result, scorer, timing, useful, first_token)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
