"""Held-out accuracy of training choices, as the mean over seeds: recipe variants x seeds x data sets.

    python bench/training_choices.py [--seeds 1 2 3] [--only answers|hh] [--variants default random ranking]

Each variant is the quickstart recipe plus a few overrides (VARIANTS below); everything else, including the split,
is the same. Prints a Markdown table and writes bench/results/training_choices.json.
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
sys.path.insert(0, str(REPO / "bench"))

from base_model_comparison import HH, length_baselines  # noqa: E402

VARIANTS = {
    "default": [],  # pairwise objective, length-grouped batches
    "random": ["--train_sampling_strategy", "random"],
    "ranking": ["--objective", "ranking"],
    # A batch of ranking holds prompts: 8 prompts x C(4,2) pairs is ~5x the pairs (and 1/5 the steps) of pairwise's
    # batch of 8 pairs; 2 prompts per batch gives about as many optimizer steps as pairwise on answers.csv.
    "ranking-b2": ["--objective", "ranking", "--per_device_train_batch_size", "2"],
}


def train_once(variant: str, dataset: Path, seed: int, epochs: float, work: Path) -> dict:
    out = work / f"rm-{variant}-{dataset.stem}-{seed}"
    command = [
        sys.executable, "pipeline/train.py", "--config", "recipes/quickstart.yaml", "--dataset_path", str(dataset),
        "--output_dir", str(out), "--seed", str(seed), "--num_train_epochs", str(epochs), "--disable_tqdm", "true",
        *VARIANTS[variant],
    ]  # fmt: skip
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"training failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "eval_results.json").read_text())
    metrics["wall_s"] = round(time.time() - started, 1)
    print(f"run: {variant} {dataset.name} seed {seed}: accuracy {metrics['pairwise_accuracy']:.4f} "
          f"({metrics['train_runtime_s']} s training)", flush=True)  # fmt: skip
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--answers_epochs", type=float, default=4)
    parser.add_argument("--hh_epochs", type=float, default=1)
    parser.add_argument("--only", choices=["answers", "hh"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", default="bench/results/training_choices.json")
    args = parser.parse_args()
    datasets = []
    if args.only in (None, "answers"):
        datasets.append((REPO / "data/answers.csv", args.answers_epochs))
    if args.only in (None, "hh") and HH.is_file():
        datasets.append((HH, args.hh_epochs))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, epochs in datasets:
            baselines = length_baselines(dataset)
            for variant in args.variants:
                runs = [train_once(variant, dataset, seed, epochs, Path(tmp)) for seed in args.seeds]
                accuracies = [r["pairwise_accuracy"] for r in runs]
                rows.append(
                    {
                        "data": dataset.name, "variant": variant, "overrides": VARIANTS[variant], "epochs": epochs,
                        "seeds": args.seeds, "accuracies": accuracies, "mean": statistics.mean(accuracies),
                        "num_pairs": runs[0]["num_pairs"], "train_s": [r["train_runtime_s"] for r in runs],
                        **baselines,
                    }
                )  # fmt: skip
                print(rows[-1], flush=True)
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| data | variant | epochs | held-out pairs | accuracy per seed | mean | training s per seed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per_seed = ", ".join(f"{a:.3f}" for a in r["accuracies"])
        seconds = ", ".join(f"{s:.0f}" for s in r["train_s"])
        print(f"| {r['data']} | {r['variant']} | {r['epochs']:g} | {r['num_pairs']} | {per_seed} | {r['mean']:.3f} "
              f"| {seconds} |")  # fmt: skip


if __name__ == "__main__":
    main()
