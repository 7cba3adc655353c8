"""Metric modules for the `evaluate` library, loaded by local path (`evaluate.load("accuracy")` needs the Hub)."""

from pathlib import Path

PAIRWISE_ACCURACY = str(Path(__file__).resolve().parent / "pairwise_accuracy")
