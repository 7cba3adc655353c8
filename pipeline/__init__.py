"""q2-reward: ranked answers -> preference pairs -> TRL reward model -> exact pairwise accuracy."""

from __future__ import annotations

from typing import Any

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
