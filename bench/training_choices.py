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

Cross-validation (`--cv K`, the protocol for choosing defaults): the dev file's prompts (normalised as the split
counts them) are dealt into K folds by a seeded shuffle (`--fold_seed`); fold f trains on the other folds and is
evaluated on fold f (`--dataset_path`/`--test_path`), so every dev pair is held out once per seed. Stock TRL runs
through the same folds. The table then gives each setting's pooled accuracy (all held-out pairs of all folds and
seeds) with a 95% interval, and its paired difference against `--baseline` on the same folds and seeds (mean of the
per-(fold, seed) differences, t-interval over those units):

    python bench/training_choices.py --only hh --cv 5 --seeds 1 2 --variants plain stock default

Side by side (`--side_by_side`, with `--cv`): for each of `--folds` and the first seed, the first of `--variants` and
stock TRL start at the same moment, one process each under the same load, so their times compare (the CV rows of a
study ran at different minutes). Ours counts its whole process; stock its process less the exact scoring done
outside its timed part. Rows go to --output with `"side_by_side": true` and are left out of the CV table.

    OMP_NUM_THREADS=1 python bench/training_choices.py --only hh --cv 5 --side_by_side --folds 0 1 \\
        --variants plain-b16 --extra="--min_train_steps 90" --output bench/results/whole_run_vs_stock.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import ANSWERS, HH_CSV, REPO, check, child_env, run_timed, train_command

HH = HH_CSV
EPOCHS = {"answers": 4.0, "hh": 1.0}
# This checkout's package, also where another one is installed editable (a study runs from a git worktree).
ENV = child_env(PYTHONPATH=str(REPO))

VARIANTS: dict[str, list[str]] = {
    "default": [],  # the recipe as it is (bf16 auto: on where native)
    "plain": ["--length_expert", "false"],
    "plain-b16": ["--length_expert", "false", "--per_device_train_batch_size", "16"],
    "plain-lr1e-4": ["--length_expert", "false", "--learning_rate", "1e-4"],
    "plain-warmup0": ["--length_expert", "false", "--warmup_steps", "0"],
    "plain-wd0": ["--length_expert", "false", "--weight_decay", "0"],
    "plain-lld0.8": ["--length_expert", "false", "--layer_lr_decay", "0.8", "--learning_rate", "1e-4"],
    "plain-center0.01": ["--length_expert", "false", "--center_rewards_coefficient", "0.01"],
    "plain-trunc-right": ["--length_expert", "false", "--truncation_side", "right"],
    "plain-epochs2": ["--length_expert", "false", "--num_train_epochs", "2"],
    "plain-epochs3": ["--length_expert", "false", "--num_train_epochs", "3"],
    "plain-b16-e2": ["--length_expert", "false", "--per_device_train_batch_size", "16", "--num_train_epochs", "2"],
    "plain-lr1e-4-b16": ["--length_expert", "false", "--learning_rate", "1e-4", "--per_device_train_batch_size", "16"],
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


def ours(variant: str, dataset: Path, seed: int, work: Path, extra: list[str], fold: Fold | None = None) -> dict:
    out = work / f"rm-{variant}-{dataset.stem}-{seed}"
    epochs = epochs_for(dataset)
    data = ["--dataset_path", str(dataset)] if fold is None else ["--dataset_path", str(fold.train), "--test_path",
                                                                   str(fold.test)]  # fmt: skip
    command = train_command(
        *data, "--output_dir", str(out), "--seed", str(seed), "--num_train_epochs", str(epochs), "--disable_tqdm",
        "true", "--save_strategy", "no", *VARIANTS[variant], *extra,
    )  # fmt: skip
    result, wall = run_timed(command, ENV)
    check(result, command)
    metrics = json.loads((out / "eval_results.json").read_text())
    precision = next((line for line in result.stdout.splitlines() if line.startswith("precision:")), "")
    shutil.rmtree(out, ignore_errors=True)  # 90 MB a run; the metrics are kept
    return {
        "accuracy": metrics["pairwise_accuracy"], "pairs": metrics["num_pairs"], "ties": metrics["num_ties"],
        "length_controlled": metrics["length"]["length_controlled_accuracy"],
        "spearman": metrics["length"]["spearman_score_length"], "train_s": metrics["train_runtime_s"],
        "wall_s": round(wall, 1), "precision": precision, "after_training_s": after_training(result.stdout),
    }  # fmt: skip


def after_training(stdout: str) -> float | None:
    """The run's own measure of the time from its last training step to the saved model (its `time:` line)."""
    line = next((x for x in stdout.splitlines() if x.startswith("time: training")), "")
    found = re.search(r"after training ([0-9.]+) s", line)
    return float(found.group(1)) if found else None


def epochs_for(dataset: Path) -> float:
    return EPOCHS["hh" if dataset == HH else "answers"]


def stock_worker(dataset: Path, seed: int, out: Path, epochs: float, test: Path | None = None) -> None:
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

    data = build_dataset(dataset, test_size=0.2, split_seed=42, test_path=test)[0]
    columns = ["prompt", "chosen", "rejected"]
    train, test = data["train"].to_pandas()[columns], data["test"].to_pandas()[columns]
    base = resolve_base_model(EMBEDDED_BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    args = RewardConfig(
        output_dir=str(out), num_train_epochs=epochs, seed=seed,
        eos_token="[SEP]", max_length=512, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), **stock_precision(),
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


def stock_precision() -> dict:
    """TRL's default precision (bf16), except where this CPU only emulates bf16: fp32 there, as a user would set it.
    `STOCK_BF16=false` asks for fp32 anyway (a side run: the stock rows of a study use the default)."""
    import torch

    from pipeline.core.precision import native_bf16

    if os.environ.get("STOCK_BF16", "auto") == "false":
        return {"bf16": False}
    return {} if native_bf16(use_cpu=not torch.cuda.is_available())[0] else {"bf16": False}


def stock(dataset: Path, seed: int, work: Path, fold: Fold | None = None) -> dict:
    files = [str(dataset)] if fold is None else [str(fold.train), str(fold.test)]
    # The epochs of the original data set: a fold's files are not HH by name (ours gets them the same way).
    command = [sys.executable, __file__, "--stock_worker", str(seed), str(work / f"stock-{seed}"),
               str(epochs_for(dataset)), *files]  # fmt: skip
    result, wall = run_timed(command, ENV)
    if result.returncode != 0:
        raise SystemExit(f"stock failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["wall_s"] = round(wall - row.pop("untimed_s"), 1)
    return row


@dataclass(frozen=True)
class Fold:
    number: int
    train: Path
    test: Path


def make_folds(dataset: Path, k: int, fold_seed: int, work: Path) -> list[Fold]:
    """Deal the normalised prompts into k folds by a seeded shuffle; write each fold's train and test rows."""
    import numpy as np
    import pandas as pd

    from pipeline.data.pairs import normalise

    rows = pd.read_csv(dataset, keep_default_na=False)
    keys = rows["prompt"].map(normalise)
    distinct = np.array(sorted(set(keys)))
    np.random.default_rng(fold_seed).shuffle(distinct)
    fold_of = {key: i % k for i, key in enumerate(distinct)}
    fold = keys.map(fold_of).to_numpy()
    folds = []
    for f in range(k):
        train, test = work / f"fold{f}-train.csv", work / f"fold{f}-test.csv"
        rows[fold != f].to_csv(train, index=False)
        rows[fold == f].to_csv(test, index=False)
        folds.append(Fold(f, train, test))
    return folds


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of independent-ish units (folds x seeds)."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def cv_table(rows: list[dict], baseline: str) -> None:
    """Per setting: pooled accuracy over every held-out pair of every fold and seed, with a 95% interval (seeds'
    pooled accuracies, t), and the paired difference against `baseline` on the (fold, seed) units both have."""
    groups: dict[str, dict[tuple[int, int], dict]] = {}
    for row in rows:
        groups.setdefault(row["variant"], {})[(row["seed"], row["fold"])] = row
    base = groups.get(baseline, {})
    print(f"\n| setting | runs (folds x seeds) | pooled acc | 95% interval | length-controlled | |Spearman| | paired "
          f"diff vs {baseline} | paired 95% interval | train s (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for variant, runs in groups.items():
        correct = sum(r["accuracy"] * r["pairs"] for r in runs.values())
        pairs = sum(r["pairs"] for r in runs.values())
        per_seed = {}
        for (seed, _), r in runs.items():
            c, n = per_seed.get(seed, (0.0, 0))
            per_seed[seed] = (c + r["accuracy"] * r["pairs"], n + r["pairs"])
        seeds = [c / n for c, n in per_seed.values()]
        # One seed's pooled accuracy has the binomial spread of `pairs` decisions; seeds add their own spread.
        binomial = 1.96 * math.sqrt((correct / pairs) * (1 - correct / pairs) / (pairs / max(1, len(seeds))))
        spread = 1.96 * statistics.stdev(seeds) / math.sqrt(len(seeds)) if len(seeds) > 1 else 0.0
        half = math.sqrt(binomial**2 / max(1, len(seeds)) + spread**2)
        length = statistics.mean(r["length_controlled"] for r in runs.values())
        spearman = statistics.mean(abs(r["spearman"]) for r in runs.values())
        shared = sorted(set(runs) & set(base))
        diffs = [runs[u]["accuracy"] - base[u]["accuracy"] for u in shared]
        if variant != baseline and len(diffs) > 1:
            d, low, high = t_interval(diffs)
            paired = f"{d:+.3f} ({len(diffs)} units) | {low:+.3f} to {high:+.3f}"
        else:
            paired = "– | –"
        train_s = statistics.median(r["train_s"] for r in runs.values())
        print(f"| {variant} | {len(runs)} | {correct / pairs:.3f} | ±{half:.3f} | {length:.3f} | {spearman:.3f} "
              f"| {paired} | {train_s:.0f} |")  # fmt: skip


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
    if len(sys.argv) in (6, 7) and sys.argv[1] == "--stock_worker":
        seed, out, epochs = int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
        files = [Path(x) for x in sys.argv[5:]]
        stock_worker(files[0], seed, out, epochs, files[1] if len(files) > 1 else None)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", choices=["answers", "hh"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default", "stock"])
    parser.add_argument("--extra", default="", help="flags added to every run of ours, e.g. '--learning_rate 2e-4'")
    parser.add_argument("--label", default="", help="suffix for the variant names in the output (with --extra)")
    parser.add_argument("--output", default="bench/results/training_choices.jsonl")
    parser.add_argument("--cv", type=int, default=0, help="k-fold cross-validation by prompt (k >= 2), see above")
    parser.add_argument("--fold_seed", type=int, default=0)
    parser.add_argument("--baseline", default="plain", help="the setting paired differences are taken against")
    parser.add_argument("--table_only", action="store_true", help="print the table of --output and stop")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (with --cv)")
    parser.add_argument("--side_by_side", action="store_true", help="ours and stock at once, see above (with --cv)")
    args = parser.parse_args()
    datasets = []
    if args.only in (None, "answers"):
        datasets.append(ANSWERS)
    if args.only in (None, "hh") and HH.is_file():
        datasets.append(HH)
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if args.cv:
        cross_validate(args, datasets, out, done)
        return
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


def cross_validate(args: argparse.Namespace, datasets: list[Path], out: Path, done: list[dict]) -> None:
    """Every (seed, fold) unit for every setting, seed by seed and fold by fold, so that an interrupted study still
    has whole units for its paired differences; appended to `out` (resumable)."""
    if args.side_by_side:
        side_by_side(args, datasets, out)
        return
    cv_rows = [r for r in done if r.get("cv") == args.cv and r.get("fold_seed") == args.fold_seed]
    cv_rows = [r for r in cv_rows if not r.get("side_by_side")]
    seen = {(r["data"], r["variant"], r["seed"], r["fold"]) for r in cv_rows}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            folds = make_folds(dataset, args.cv, args.fold_seed, Path(tmp))
            for seed in [] if args.table_only else args.seeds:
                for fold in [f for f in folds if args.folds is None or f.number in args.folds]:
                    for variant in args.variants:
                        name = variant + args.label
                        if (dataset.name, name, seed, fold.number) in seen:
                            continue
                        if variant == "stock":
                            row = stock(dataset, seed, Path(tmp), fold)
                        else:
                            row = ours(variant, dataset, seed, Path(tmp), args.extra.split(), fold)
                        row = {"data": dataset.name, "variant": name, "seed": seed, "cv": args.cv,
                               "fold_seed": args.fold_seed, "fold": fold.number, **row}  # fmt: skip
                        print(json.dumps(row), flush=True)
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        cv_rows.append(row)
            cv_table([r for r in cv_rows if r["data"] == dataset.name], args.baseline)


def side_by_side(args: argparse.Namespace, datasets: list[Path], out: Path) -> None:
    """The first variant and stock started together on each chosen fold; their whole-run times and the ratio."""
    variant, seed = args.variants[0], args.seeds[0]
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for fold in make_folds(dataset, args.cv, args.fold_seed, Path(tmp)):
                if args.folds is not None and fold.number not in args.folds:
                    continue
                with ThreadPoolExecutor(2) as pool:
                    mine = pool.submit(ours, variant, dataset, seed, Path(tmp), args.extra.split(), fold)
                    theirs = pool.submit(stock, dataset, seed, Path(tmp), fold)
                    rows = {variant + args.label: mine.result(), "stock": theirs.result()}
                for name, row in rows.items():
                    where = {"fold_seed": args.fold_seed, "fold": fold.number, "load": os.getloadavg()[0]}
                    row = {"data": dataset.name, "variant": name, "seed": seed, "cv": args.cv, "side_by_side": True,
                           **where, **row}  # fmt: skip
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                a, b = rows.values()
                print(
                    f"fold {fold.number}: {variant + args.label} whole run {a['wall_s']:.0f} s (training "
                    f"{a['train_s']:.0f} s, after {a['after_training_s']} s), accuracy {a['accuracy']:.3f}; stock "
                    f"training + evaluate {b['wall_s']:.0f} s (training {b['train_s']:.0f} s), accuracy "
                    f"{b['accuracy']:.3f}; stock / ours {b['wall_s'] / a['wall_s']:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
