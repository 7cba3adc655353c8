"""Batch scoring at scale: `python -m pipeline.score` over a generated 1,000,000-row CSV, rows per second and peak RSS.

The rows are `data_scale.py`'s (250,000 prompts x 4 answers of about 200 characters, shuffled). The model is a tiny
DistilBERT (2 layers, width 64) with the real base model's tokenizer: tokenization, reading and writing cost what
they cost with a real model, and the model costs little, so the I/O path's share is as large as it gets (a real
model scores ~50 rows/s on 2 CPU cores: 1M rows would take hours). Each run is the command as a user types it,

    python -m pipeline.score --model TINY --input BIG.csv --output OUT.csv --no_progress [--rank]

in a subprocess (wall, CPU, peak RSS via os.wait4). `--compare CHECKOUT` runs another checkout's package (e.g. a
`git worktree` of the commit before streaming) in the same way, alternating runs, so that the ratio is measured side
by side. Prints a Markdown table (paste it into bench/RESULTS.md, "Scoring at scale").

    HF_HUB_OFFLINE=1 python bench/score_scale.py [--prompts 250000] [--runs 2] [--rank] [--compare DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, child_env, machine
from data_scale import generate

TARGET_GB = 3.0


def tiny_model(target: Path) -> Path:
    """A 2-layer DistilBERT reward model with the embedded base model's tokenizer, saved to `target`."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(EMBEDDED_BASE_MODEL))
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=64, hidden_dim=128, n_layers=2, n_heads=2, max_position_embeddings=512,
        num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    DistilBertForSequenceClassification(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def run_score(package: Path, model: Path, source: Path, out: Path, rank: bool) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GB) of one scoring command run from `package`."""
    command = [sys.executable, "-m", "pipeline.score", "--model", str(model), "--input", str(source), "--output",
               str(out), "--no_progress", *(["--rank"] if rank else [])]  # fmt: skip
    env = {**child_env(), "PYTHONPATH": str(package)}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=package, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{package}: scoring failed:\n{output[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=250_000)
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rank", action="store_true", help="score with --rank (two passes over the input)")
    parser.add_argument("--compare", type=Path, help="another checkout whose package is run alongside")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="q2-score-scale-"))
    try:
        source = work / "rows.csv"
        size = generate(source, args.prompts, args.answers)
        rows = args.prompts * args.answers
        model = tiny_model(work / "tiny")
        print(f"{rows:,} rows, {size / 1e6:.0f} MB; machine: {machine(load=True)}\n")
        print("| code | run | rows | --rank | wall s | rows/s | CPU s | peak RSS GB | within 3 GB |")
        print("|---|---|---|---|---|---|---|---|---|")
        packages = [("this checkout", REPO)] + ([("compared", args.compare.resolve())] if args.compare else [])
        for run in range(1, args.runs + 1):
            for name, package in packages:
                out = work / "scored.csv"
                wall, cpu, rss = run_score(package, model, source, out, args.rank)
                ok = "yes" if rss <= TARGET_GB else "NO"
                print(f"| {name} | {run} | {rows:,} | {args.rank} | {wall:.1f} | {rows / wall:,.0f} | {cpu:.1f} "
                      f"| {rss:.2f} | {ok} |", flush=True)  # fmt: skip
                out.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
