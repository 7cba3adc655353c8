"""Training: TRL `RewardTrainer` subclasses (pairwise and listwise ranking objectives) on token ids from the one
encoding, checkpoints that a rerun resumes from, and what changes under several processes.

May import `pipeline.core`, `pipeline.recipe`, `pipeline.data` and `pipeline.model`.
"""

from pipeline.training.examples import GroupCollator, pairwise_dataset, ranking_dataset
from pipeline.training.loss import group_ranking_loss
from pipeline.training.objectives import PairwiseRewardTrainer, RankingRewardTrainer
from pipeline.training.trainer import QRewardTrainer

__all__ = [
    "GroupCollator",
    "PairwiseRewardTrainer",
    "QRewardTrainer",
    "RankingRewardTrainer",
    "group_ranking_loss",
    "pairwise_dataset",
    "ranking_dataset",
]
