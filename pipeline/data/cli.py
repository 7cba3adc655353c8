"""The data step's command line: build the dataset a recipe describes, save it with its report, push it if asked.

python -m pipeline.data --config recipes/quickstart.yaml [--dataset_path FILE] [--output_dir DIR]  (--help: the keys)
"""

from __future__ import annotations

import sys

from pipeline.core.errors import UserError, cli_entry
from pipeline.core.files import check_replaceable
from pipeline.data.publish import data_options, dataset_hub_target, push_dataset, save_dataset
from pipeline.data.split import build_dataset

DEFAULT_OUTPUT_DIR = "data/processed"
USAGE = "python -m pipeline.data --config RECIPE.yaml [--output_dir DIR] [--KEY VALUE ...]"
DESCRIPTION = (
    "Build the preference pairs a recipe describes and save them as a DatasetDict with data_report.json. "
    f"Here --output_dir DIR is where the dataset goes (default {DEFAULT_OUTPUT_DIR}), not the model's folder."
)
# The recipe keys the data step reads, in the order --help shows them (the rest are about training).
DATA_KEYS = (
    "dataset_path", "test_path", "input_shape", "test_size", "split_seed", "drop_empty_answers", "prompt_column",
    "answer_column", "rank_column", "score_column", "chosen_column", "rejected_column", "margin_column",
    "dataset_push_to_hub", "dataset_hub_id",
)  # fmt: skip


def _output_dir(argv: list[str]) -> str:
    """Take --output_dir DIR out of argv: here it is the dataset's directory, not the recipe's model output_dir."""
    found = [i for i, arg in enumerate(argv) if arg == "--output_dir" or arg.startswith("--output_dir=")]
    if not found:
        return DEFAULT_OUTPUT_DIR
    index = found[-1]
    if argv[index].startswith("--output_dir="):
        output_dir = argv.pop(index).split("=", 1)[1]
    elif index + 1 >= len(argv) or argv[index + 1].startswith("--"):
        raise UserError("command line: --output_dir needs a directory, e.g. --output_dir data/processed")
    else:
        output_dir = argv.pop(index + 1)
        del argv[index]
    if not output_dir.strip():
        raise UserError("command line: --output_dir must be a directory, e.g. --output_dir data/processed (got '')")
    return output_dir


@cli_entry
def main(argv: list[str] | None = None) -> None:
    from pipeline.recipe.parser import HelpPage, parse_recipe  # trl and torch: only once the command runs

    argv = list(sys.argv[1:] if argv is None else argv)
    output_dir = _output_dir(argv)
    page = HelpPage(USAGE, DESCRIPTION, (("data keys", DATA_KEYS), ("Hub keys", ("hub_private_repo", "hub_token"))))
    script_args, training_args, _ = parse_recipe(argv, page, trains=False)
    options = data_options(script_args)
    repo_id = dataset_hub_target(script_args)
    inputs = (script_args.dataset_path, script_args.test_path)
    check_replaceable(output_dir, ("dataset_dict.json", "data_report.json", "train", "test"), "--output_dir", inputs)
    dataset, report = build_dataset(
        script_args.dataset_path,
        script_args.test_size,
        script_args.split_seed,
        script_args.drop_empty_answers,
        **options,
    )
    save_dataset(dataset, report, output_dir)
    print(report.summary())
    print(f"saved DatasetDict to {output_dir}")
    if repo_id:
        url = push_dataset(
            dataset, repo_id, private=training_args.hub_private_repo, kept_in=output_dir, token=training_args.hub_token
        )
        print(f"pushed the dataset to {url}")


if __name__ == "__main__":
    main()
