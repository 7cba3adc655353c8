"""Training: TRL `RewardTrainer` subclasses (pairwise and listwise ranking objectives) on token ids from the one
encoding, checkpoints that a rerun resumes from, and what changes under several processes.

May import `pipeline.core`, `pipeline.recipe`, `pipeline.data` and `pipeline.model`.
"""

from pipeline.training.trainers import (
    GroupCollator,
    PairwiseRewardTrainer,
    RankingRewardTrainer,
    pairwise_dataset,
    ranking_dataset,
)

__all__ = ["GroupCollator", "PairwiseRewardTrainer", "RankingRewardTrainer", "pairwise_dataset", "ranking_dataset"]
