"""Held-out pairwise accuracy: embedded pretrained DistilBERT vs a randomly initialised one of the same shape.

Same data, recipe and seeds for both; the mean over seeds is what to compare (a few hundred pairs swing with the seed).

    python bench/base_model_comparison.py [--seeds 1 2 3] [--hh_epochs 1] [--only answers|hh]

Prints a Markdown table and writes bench/results/base_model_comparison.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import ANSWERS, HH_CSV, REPO, check, require, run_timed, train_command

from pipeline.data import build_dataset
from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model


def random_twin(target: Path) -> Path:
    """A DistilBERT with the embedded model's config and tokenizer but random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    embedded = resolve_base_model(EMBEDDED_BASE_MODEL)
    config = AutoConfig.from_pretrained(embedded)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(target)
    return target


def length_baselines(dataset_path: Path) -> dict[str, float]:
    """'Shorter answer wins' and 'longer answer wins' on the same held-out pairs (ties count as wrong)."""
    test = build_dataset(dataset_path, test_size=0.2, split_seed=42)[0]["test"].to_pandas()
    chosen, rejected = test["chosen"].str.len(), test["rejected"].str.len()
    return {"shorter_wins": float((chosen < rejected).mean()), "longer_wins": float((chosen > rejected).mean())}


def train_once(model: str, dataset: Path, seed: int, epochs: float, work: Path) -> dict:
    out = work / f"rm-{abs(hash((model, str(dataset), seed)))}"
    command = train_command(
        "--model_name_or_path", model, "--dataset_path", str(dataset), "--output_dir", str(out), "--seed", str(seed),
        "--num_train_epochs", str(epochs), "--disable_tqdm", "true",
    )  # fmt: skip
    result, wall = run_timed(command)
    check(result, command)
    metrics = json.loads((out / "eval_results.json").read_text())
    metrics["wall_s"] = round(wall, 1)
    print(f"run: {model} {dataset.name} seed {seed}: accuracy {metrics['pairwise_accuracy']:.4f}", flush=True)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--answers_epochs", type=float, default=4)
    parser.add_argument("--hh_epochs", type=float, default=1)
    parser.add_argument("--only", choices=["answers", "hh"], help="run one of the two data sets")
    parser.add_argument("--output", default="bench/results/base_model_comparison.json")
    parser.add_argument("--hh", type=Path, default=HH_CSV, help="HH-RLHF dev CSV (default: $Q2_HH_DATA or ../shared)")
    parser.add_argument("--bases", nargs="+", choices=["embedded", "random"], default=["embedded", "random"])
    args = parser.parse_args()
    datasets = []
    if args.only in (None, "answers"):
        datasets.append((ANSWERS, args.answers_epochs))
    if args.only == "hh":
        datasets.append((require(args.hh, "--hh"), args.hh_epochs))
    elif args.only is None and args.hh.is_file():
        datasets.append((args.hh, args.hh_epochs))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bases = {}
        if "embedded" in args.bases:
            bases["embedded pretrained"] = EMBEDDED_BASE_MODEL
        if "random" in args.bases:
            bases["random init"] = str(random_twin(work / "random"))
        for dataset, epochs in datasets:
            baselines = length_baselines(dataset)
            for label, model in bases.items():
                runs = [train_once(model, dataset, seed, epochs, work) for seed in args.seeds]
                accuracies = [r["pairwise_accuracy"] for r in runs]
                rows.append(
                    {
                        "data": dataset.name, "base": label, "epochs": epochs, "seeds": args.seeds,
                        "accuracies": accuracies, "mean": statistics.mean(accuracies),
                        "num_pairs": runs[0]["num_pairs"], "ties": [r["num_ties"] for r in runs],
                        "wall_s": [r["wall_s"] for r in runs], **baselines,
                    }
                )  # fmt: skip
                print(rows[-1], flush=True)
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| data | base | epochs | held-out pairs | accuracy per seed | mean | shorter wins | longer wins |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_seed = ", ".join(f"{a:.3f}" for a in r["accuracies"])
        print(
            f"| {r['data']} | {r['base']} | {r['epochs']:g} | {r['num_pairs']} | {per_seed} | {r['mean']:.3f} "
            f"| {r['shorter_wins']:.3f} | {r['longer_wins']:.3f} |"
        )


if __name__ == "__main__":
    main()
