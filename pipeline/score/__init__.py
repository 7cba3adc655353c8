"""Use a trained model: `RewardScorer` (the model's scoring engine) from Python, and `python -m pipeline.score` to
score the rows of a file.

May import `pipeline.core`, `pipeline.data` and `pipeline.model`.
"""

from pipeline.model.scorer import RewardScorer

__all__ = ["RewardScorer"]
