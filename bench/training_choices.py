"""Held-out accuracy, length bias and wall time of training choices, as means over seeds; stock TRL alongside.

    python bench/training_choices.py [--seeds 1 2 3] [--only answers|hh] [--variants default lr2e-4 stock ...]

Each variant is the quickstart recipe plus a few overrides (VARIANTS below); everything else, including the split
(prompt-level, test_size 0.2, split_seed 42), is the same. Every run is a fresh process timed from outside: ours is
the whole `python pipeline/train.py` (data, training, held-out evaluation, baselines, reward statistics, report,
save); "stock" is TRL's `RewardTrainer` as its docs show it (text columns, its defaults: lr 1e-4, bf16 autocast,
activation checkpointing, random batches), with `eos_token="[SEP]"` and `max_length=512` so that DistilBERT runs,
`use_cpu` on CPU-only machines (transformers' condition for bf16 there), 1 epoch, plus its `trainer.evaluate()` on
the held-out pairs it keeps. Its exact accuracy and length metrics are then computed outside its timed part.

Each run is appended to --output as one JSON line (a rerun resumes: runs already there are skipped); at the end a
Markdown table of means over seeds is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HH = REPO.parent / "shared" / "data" / "hh_harmless_dev.csv"
EPOCHS = {"answers": 4.0, "hh": 1.0}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

VARIANTS: dict[str, list[str]] = {
    "default": [],  # the recipe as it is (bf16 auto: on where native)
    "fp32": ["--bf16", "false"],
    "stock": [],  # TRL's RewardTrainer, see the module docstring
    "random": ["--train_sampling_strategy", "random"],
    "ranking": ["--objective", "ranking"],
    # A batch of ranking holds prompts: 2 prompts per batch gives about as many optimizer steps as 8 pairs on answers.
    "ranking-b2": ["--objective", "ranking", "--per_device_train_batch_size", "2"],
    "lr1e-4": ["--learning_rate", "1e-4"],
    "lr2e-4": ["--learning_rate", "2e-4"],
    "lr3e-4": ["--learning_rate", "3e-4"],
    "epochs2": ["--num_train_epochs", "2"],
    "warmup0": ["--warmup_steps", "0"],
    "batch4": ["--per_device_train_batch_size", "4"],
    "batch16": ["--per_device_train_batch_size", "16"],
    "center0.01": ["--center_rewards_coefficient", "0.01"],
    "trunc-right": ["--truncation_side", "right"],
    # length_bias_penalty (squared covariance with standardised length); "lencorr1" in results/ is the squared
    # correlation with weight 1, the first form tried: it kept the model from learning at all (see RESULTS.md).
    "lenbias3": ["--length_bias_penalty", "3"],
    "lenbias10": ["--length_bias_penalty", "10"],
    "lenbias30": ["--length_bias_penalty", "30"],
    "lenbias100": ["--length_bias_penalty", "100"],
}


def ours(variant: str, dataset: Path, seed: int, work: Path, extra: list[str]) -> dict:
    out = work / f"rm-{variant}-{dataset.stem}-{seed}"
    epochs = EPOCHS["hh" if dataset == HH else "answers"]
    command = [
        sys.executable, "pipeline/train.py", "--config", "recipes/quickstart.yaml", "--dataset_path", str(dataset),
        "--output_dir", str(out), "--seed", str(seed), "--num_train_epochs", str(epochs), "--disable_tqdm", "true",
        "--save_strategy", "no", *VARIANTS[variant], *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"training failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "eval_results.json").read_text())
    precision = next((line for line in result.stdout.splitlines() if line.startswith("precision:")), "")
    return {
        "accuracy": metrics["pairwise_accuracy"], "pairs": metrics["num_pairs"], "ties": metrics["num_ties"],
        "length_controlled": metrics["length"]["length_controlled_accuracy"],
        "spearman": metrics["length"]["spearman_score_length"], "train_s": metrics["train_runtime_s"],
        "wall_s": round(wall, 1), "precision": precision,
    }  # fmt: skip


def stock_worker(dataset: Path, seed: int, out: Path) -> None:
    """One stock run in this process; prints a JSON line with its accuracy and how long the untimed part took."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from pipeline.data import build_dataset
    from pipeline.evaluation.metrics import length_bias
    from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model
    from pipeline.model.scorer import RewardScorer

    data = build_dataset(dataset, test_size=0.2, split_seed=42)[0]
    columns = ["prompt", "chosen", "rejected"]
    train, test = data["train"].to_pandas()[columns], data["test"].to_pandas()[columns]
    base = resolve_base_model(EMBEDDED_BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    args = RewardConfig(
        output_dir=str(out), num_train_epochs=EPOCHS["hh" if dataset == HH else "answers"], seed=seed,
        eos_token="[SEP]", max_length=512, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    trainer = RewardTrainer(
        model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_pandas(train),
        eval_dataset=Dataset.from_pandas(test),
    )  # fmt: skip
    train_s = trainer.train().metrics["train_runtime"]
    trainer.evaluate()
    untimed = time.perf_counter()
    # Exact accuracy of the stock model on the held-out pairs it keeps, scored with its own text encoding.
    encode = lambda p, a: tokenizer(text=p + a + "[SEP]")["input_ids"]  # noqa: E731
    chosen = [encode(p, a) for p, a in zip(test.prompt, test.chosen, strict=True)]
    rejected = [encode(p, a) for p, a in zip(test.prompt, test.rejected, strict=True)]
    kept = np.array([len(c) <= 512 and len(r) <= 512 for c, r in zip(chosen, rejected, strict=True)])
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    scorer = RewardScorer(model, tokenizer, device=None, batch_size=32)
    ids = [c for c, k in zip(chosen, kept, strict=True) if k] + [r for r, k in zip(rejected, kept, strict=True) if k]
    scores = scorer.score_ids(ids)
    n = int(kept.sum())
    c_scores, r_scores = scores[:n], scores[n:]
    length = length_bias(test[kept], c_scores, r_scores)
    print(json.dumps({
        "accuracy": float((c_scores > r_scores).mean()), "pairs": n, "ties": int((c_scores == r_scores).sum()),
        "length_controlled": length["length_controlled_accuracy"], "spearman": length["spearman_score_length"],
        "train_s": round(train_s, 1), "untimed_s": time.perf_counter() - untimed, "precision": f"bf16={args.bf16}",
    }))  # fmt: skip


def stock(dataset: Path, seed: int, work: Path) -> dict:
    command = [sys.executable, __file__, "--stock_worker", str(dataset), str(seed), str(work / f"stock-{seed}")]
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"stock failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["wall_s"] = round(wall - row.pop("untimed_s"), 1)
    return row


def table(rows: list[dict]) -> None:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["variant"]), []).append(row)
    print("\n| data | variant | seeds | accuracy per seed | mean acc | length-controlled | |Spearman| | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for (data, variant), runs in groups.items():
        acc = [r["accuracy"] for r in runs]
        length = statistics.mean(r["length_controlled"] for r in runs)
        spearman = statistics.mean(abs(r["spearman"]) for r in runs)
        walls = [r["wall_s"] for r in runs]
        print(
            f"| {data} | {variant} | {len(runs)} | {', '.join(f'{a:.3f}' for a in acc)} | {statistics.mean(acc):.3f} "
            f"| {length:.3f} | {spearman:.3f} | {min(walls):.0f}–{max(walls):.0f} |"
        )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--stock_worker":
        stock_worker(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", choices=["answers", "hh"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default", "stock"])
    parser.add_argument("--extra", default="", help="flags added to every run of ours, e.g. '--learning_rate 2e-4'")
    parser.add_argument("--label", default="", help="suffix for the variant names in the output (with --extra)")
    parser.add_argument("--output", default="bench/results/training_choices.jsonl")
    args = parser.parse_args()
    datasets = []
    if args.only in (None, "answers"):
        datasets.append(REPO / "data/answers.csv")
    if args.only in (None, "hh") and HH.is_file():
        datasets.append(HH)
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    seen = {(r["data"], r["variant"], r["seed"]) for r in done}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for variant in args.variants:
                name = variant + args.label
                for seed in args.seeds:
                    if (dataset.name, name, seed) in seen:
                        continue
                    if variant == "stock":
                        row = stock(dataset, seed, Path(tmp))
                    else:
                        row = ours(variant, dataset, seed, Path(tmp), args.extra.split())
                    row = {"data": dataset.name, "variant": name, "seed": seed, **row}
                    print(json.dumps(row), flush=True)
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    done.append(row)
    table(done)


if __name__ == "__main__":
    main()
