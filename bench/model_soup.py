"""Does a "model soup" pay? Held-out accuracy of the weight average of N runs against the runs themselves.

    python bench/model_soup.py [--recipe recipes/large.yaml] [--seed 1] [--members 1 2 3] [--hh PATH]

Each member is a whole `python pipeline/train.py` run of the recipe on the HH dev split with the same `seed` (so the
same initialisation of the new head) and its own `data_seed` (its own batch order); the soup is the plain average
of their weights, an ordinary DistilBERT saved like any other. Prints each member's accuracy, their mean, the
soup's, and the training minutes the extra members cost; appends one JSON line to bench/results/model_soup.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import HH_CSV, REPO, check, require, run_timed, train_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/large.yaml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 3], help="the members' data_seed values")
    parser.add_argument("--hh", type=Path, default=HH_CSV)
    parser.add_argument("--output", default="bench/results/model_soup.jsonl")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.data import build_dataset
    from pipeline.evaluation.accuracy import evaluate_pairs

    test = build_dataset(require(args.hh, "--hh"), test_size=0.2, split_seed=42)[0]["test"].to_pandas()
    with tempfile.TemporaryDirectory() as tmp:
        members, minutes = [], []
        for data_seed in args.members:
            out = Path(tmp) / f"m{data_seed}"
            command = train_command(
                "--dataset_path", str(args.hh), "--output_dir", str(out), "--seed", str(args.seed),
                "--data_seed", str(data_seed), "--save_strategy", "no", "--disable_tqdm", "true", recipe=args.recipe,
            )  # fmt: skip
            result, wall = run_timed(command)
            minutes.append(wall / 60)
            check(result, command)
            accuracy = json.loads((out / "eval_results.json").read_text())["pairwise_accuracy"]
            members.append({"data_seed": data_seed, "accuracy": accuracy})
            print(members[-1], flush=True)
        models = [AutoModelForSequenceClassification.from_pretrained(Path(tmp) / f"m{s}") for s in args.members]
        soup = models[0]
        states = [m.state_dict() for m in models]
        soup.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                              for k, v in states[0].items()})  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / f"m{args.members[0]}")
        soup_accuracy = evaluate_pairs(soup.eval(), tokenizer, test, 512)["pairwise_accuracy"]
    mean = sum(m["accuracy"] for m in members) / len(members)
    row = {"recipe": args.recipe, "seed": args.seed, "members": members, "member_mean": mean,
           "soup": soup_accuracy, "minutes_per_member": minutes}  # fmt: skip
    print(json.dumps(row))
    each = ", ".join(f"{m['accuracy']:.3f}" for m in members)
    print(f"members {each} (mean {mean:.3f}); soup {soup_accuracy:.3f}; {sum(minutes[1:]):.1f} extra training minutes")
    out = REPO / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
