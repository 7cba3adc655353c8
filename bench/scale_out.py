"""1 process vs N processes (DDP; gloo on a CPU-only machine) on the quickstart recipe, same global batch and seed.

    python bench/scale_out.py [--processes 2] [--epochs 4]

Random batch order (length-grouped batches depend on the per-process batch size, so they would differ by design).
Prints held-out accuracy, pairs, the largest difference of any pair's reward margin (chosen - rejected) and wall
time; writes bench/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
from common import REPO, check, run_timed, train_command


def run(command: list[str]) -> float:
    result, wall = run_timed(command)
    check(result, command, "failed")
    return wall


def summary(out: Path) -> tuple[dict, pd.Series]:
    results = json.loads((out / "eval_results.json").read_text())
    pairs = pd.read_json(out / "evaluation" / "pairs.jsonl", lines=True)
    return results, pairs["chosen_score"] - pairs["rejected_score"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch", type=int, default=8, help="global batch (pairs per optimizer step)")
    args = parser.parse_args()
    flags = ["--train_sampling_strategy", "random", "--num_train_epochs", str(args.epochs), "--disable_tqdm", "true"]
    launch = ["--config_file", "accelerate_config.yaml", "--num_processes", str(args.processes), "--num_machines", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        batch = "--per_device_train_batch_size"
        wall_one = run(train_command(*flags, "--output_dir", str(one), batch, str(args.batch)))
        wall_many = run(train_command(*flags, "--output_dir", str(many), batch, str(args.batch // args.processes),
                                      launch=launch))  # fmt: skip
        (r1, m1), (rn, mn) = summary(one), summary(many)
    row = {
        "processes": args.processes, "epochs": args.epochs, "global_batch": args.batch,
        "accuracy_1": r1["pairwise_accuracy"], f"accuracy_{args.processes}": rn["pairwise_accuracy"],
        "num_pairs_1": r1["num_pairs"], f"num_pairs_{args.processes}": rn["num_pairs"],
        "max_margin_diff": float((m1 - mn).abs().max()), "mean_abs_margin": float(m1.abs().mean()),
        "wall_s_1": round(wall_one, 1), f"wall_s_{args.processes}": round(wall_many, 1),
    }  # fmt: skip
    out = REPO / "bench/results/scale_out.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
