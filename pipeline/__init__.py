"""q2-reward: ranked answers -> preference pairs -> TRL reward model -> exact pairwise accuracy.

The Python API of a trained model: `from pipeline import RewardScorer, RewardFunction` (their one public path).
"""

from __future__ import annotations

import os
from typing import Any

# MKL's conditional numerical reproducibility, strict: without it MKL's AVX2 matrix products depend on the memory
# alignment of their inputs, so the same batch scored in another process (or run) can differ in the 7th digit.
# Read when MKL first runs, so it is set before torch is imported by anything here; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
__all__ = ["RewardFunction", "RewardScorer"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import pipeline.data` (and every command line) must not pay for torch and transformers.
    if name == "RewardFunction":
        from pipeline.score.reward_function import RewardFunction

        return RewardFunction
    if name == "RewardScorer":
        from pipeline.model.scorer import RewardScorer

        return RewardScorer
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
