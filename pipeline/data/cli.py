"""The data step's command line: build the dataset a recipe describes, save it with its report, push it if asked.

python -m pipeline.data --config recipes/quickstart.yaml [--dataset_path FILE] [--output_dir DIR]
"""

from __future__ import annotations

import sys

from pipeline.core.errors import UserError, cli_entry
from pipeline.core.files import check_replaceable
from pipeline.data.publish import data_options, dataset_hub_target, push_dataset, save_dataset
from pipeline.data.split import build_dataset


def _output_dir(argv: list[str]) -> str:
    """Take --output_dir DIR out of argv: here it is the dataset's directory, not the recipe's model output_dir."""
    if "--output_dir" not in argv:
        return "data/processed"
    index = argv.index("--output_dir")
    if index + 1 >= len(argv):
        raise UserError("--output_dir needs a directory")
    output_dir = argv[index + 1]
    del argv[index : index + 2]
    return output_dir


@cli_entry
def main(argv: list[str] | None = None) -> None:
    from pipeline.recipe.config import parse_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    output_dir = _output_dir(argv)
    script_args, training_args, _ = parse_recipe(argv)
    options = data_options(script_args)
    repo_id = dataset_hub_target(script_args)
    inputs = (script_args.dataset_path, script_args.test_path)
    check_replaceable(output_dir, ("dataset_dict.json", "data_report.json"), "--output_dir", inputs)
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
        url = push_dataset(dataset, repo_id, private=training_args.hub_private_repo, kept_in=output_dir)
        print(f"pushed the dataset to {url}")


if __name__ == "__main__":
    main()
