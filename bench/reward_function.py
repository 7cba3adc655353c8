"""The reward function in GRPO's call pattern vs TRL's built-in reward-model path, on the same inputs.

    python bench/reward_function.py [--model DIR] [--calls 4] [--prompts 16] [--generations 8] [--short]

Each call scores `prompts x generations` (prompt, completion) pairs, as GRPOTrainer calls its reward functions once
per generation batch: HH-RLHF harmless prompts from ../shared/data/hh_harmless_dev.jsonl, and as completions HH
answers cut to a random length of 16-256 words (what a policy generates). Compared on the same calls:
- `RewardFunction` (this repo): the training encoding `[CLS] prompt [SEP] completion [SEP]`, truncated to 512;
- TRL 1.16's path for a reward *model* in `reward_funcs` (grpo_trainer.py `_calculate_rewards`, restated here
  verbatim): `tokenizer(text=[p + c], padding=True, padding_side="right", add_special_tokens=False)`, no truncation.
Time per call, and agreement with the Quick Start's scores (the encoding the model was trained and evaluated with):
max |difference| and the share of within-prompt orderings of completions that agree (what GRPO's advantages use).
A call whose longest text exceeds the model's 512 positions crashes TRL's path; such calls are counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import HH_JSONL, machine, require, use_all_cores

from pipeline import RewardFunction


def make_calls(
    path: Path, calls: int, prompts: int, generations: int, short: bool, seed: int = 0
) -> list[tuple[list, list]]:
    """`short`: prompts of at most 100 words and completions of at most 180, so that prompt + completion fits
    DistilBERT's 512 positions and TRL's path can be timed; otherwise any prompt and 16-256 words."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if short:
        records = [r for r in records if len(r["prompt"].split()) <= 100]
    answers = [r[k] for r in records for k in ("chosen", "rejected") if r[k].strip()]
    longest = 181 if short else 257
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(calls):
        chosen_prompts = [records[i]["prompt"] for i in rng.choice(len(records), size=prompts, replace=False)]
        ps, cs = [], []
        for prompt in chosen_prompts:
            for _ in range(generations):
                words = answers[rng.integers(len(answers))].split()
                words = (words * (1 + 256 // max(1, len(words))))[: rng.integers(16, longest)]
                ps.append(prompt)
                cs.append(" " + " ".join(words))
        out.append((ps, cs))
    return out


def quick_start(model, tokenizer, prompts: list[str], completions: list[str]) -> np.ndarray:
    scores = []
    with torch.no_grad():
        for p, c in zip(prompts, completions, strict=True):
            inputs = tokenizer(p, c, return_tensors="pt", truncation=True, max_length=512)
            scores.append(model(**inputs).logits.item())
    return np.asarray(scores)


def trl_model_path(model, tokenizer, prompts: list[str], completions: list[str]) -> np.ndarray:
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    inputs = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        return model(**inputs).logits[:, 0].float().numpy()


def ordering_agreement(a: np.ndarray, b: np.ndarray, group: int) -> float:
    agree = total = 0
    for start in range(0, len(a), group):
        x, y = a[start : start + group], b[start : start + group]
        i, j = np.triu_indices(len(x), 1)
        total += len(i)
        agree += int((np.sign(x[i] - x[j]) == np.sign(y[i] - y[j])).sum())
    return agree / max(1, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="reward model directory (default: the embedded DistilBERT, random head)")
    parser.add_argument("--data", type=Path, default=HH_JSONL)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--short", action="store_true", help="only inputs that fit 512 tokens (TRL's path can run)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    use_all_cores()
    model_path = args.model
    if not model_path:
        from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model

        model_path = resolve_base_model(EMBEDDED_BASE_MODEL)
    calls = make_calls(require(args.data), args.calls, args.prompts, args.generations, args.short)
    modes = {"RewardFunction fp32": RewardFunction.from_pretrained(model_path, device="cpu")}
    auto = RewardFunction.from_pretrained(model_path, precision="auto", device="cpu")
    if auto.scorer.precision != "fp32":
        modes[f"RewardFunction auto ({auto.scorer.precision})"] = auto
    scorer = modes["RewardFunction fp32"].scorer
    model, tokenizer = scorer.model, scorer.tokenizer
    rows: dict[str, dict] = {name: {"seconds": [], "max_diff": 0.0, "agree": [], "crashed": 0} for name in modes}
    rows["TRL model path"] = {"seconds": [], "max_diff": 0.0, "agree": [], "crashed": 0}
    for prompts, completions in calls:
        reference = quick_start(model, tokenizer, prompts, completions)
        for name, function in modes.items():
            started = time.perf_counter()
            scores = np.asarray(function(prompts=prompts, completions=completions, completion_ids=None))
            rows[name]["seconds"].append(time.perf_counter() - started)
            rows[name]["max_diff"] = max(rows[name]["max_diff"], float(np.abs(scores - reference).max()))
            rows[name]["agree"].append(ordering_agreement(scores, reference, args.generations))
        started = time.perf_counter()
        try:
            scores = trl_model_path(model, tokenizer, prompts, completions)
        except (RuntimeError, IndexError):  # positions beyond 512: the embedding lookup fails
            rows["TRL model path"]["crashed"] += 1
            continue
        rows["TRL model path"]["seconds"].append(time.perf_counter() - started)
        row = rows["TRL model path"]
        row["max_diff"] = max(row["max_diff"], float(np.abs(scores - reference).max()))
        row["agree"].append(ordering_agreement(scores, reference, args.generations))
    per_call = args.prompts * args.generations
    kind = "short (fits 512 tokens)" if args.short else "any length"
    print(f"{machine()}; {len(calls)} calls of {args.prompts} prompts x {args.generations} completions ({kind})")
    print("\n| path | s per call (median) | calls crashed | max abs diff vs Quick Start | orderings agreeing |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        seconds = f"{np.median(row['seconds']):.2f}" if row["seconds"] else "n/a"
        agree = f"{100 * np.mean(row['agree']):.1f}%" if row["agree"] else "n/a"
        print(f"| {name} | {seconds} | {row['crashed']} of {len(calls)} | {row['max_diff']:.2e} | {agree} |")
    if args.json:
        result = {"machine": machine(), "short": args.short, "calls": len(calls), "pairs_per_call": per_call}
        result["rows"] = rows
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
