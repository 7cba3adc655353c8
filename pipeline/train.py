"""One command: ranked file -> pairs -> TRL RewardTrainer -> exact held-out accuracy -> saved (and pushed) model.

accelerate launch pipeline/train.py --config recipes/quickstart.yaml [--any_field value ...]

The script that `accelerate launch` runs: the same as `q2-reward train`, whose phases are in pipeline/cli/train.py.
"""

import sys

try:
    from pipeline.cli import run_command  # light: torch loads in run_command, where Ctrl-C is one line
except ModuleNotFoundError as err:
    if err.name != "pipeline":
        raise
    print("error: the pipeline package is not installed; run `pip install -e .` in the repository", file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    run_command("train", sys.argv[1:])
