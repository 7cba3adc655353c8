"""Use a trained model: `python -m pipeline.score` scores the rows of a file; `RewardFunction`
(`score/reward_function.py`) is the reward function for TRL's RL trainers. From Python, both `RewardScorer` and
`RewardFunction` are imported from `pipeline` (their one public path).

May import `pipeline.core`, `pipeline.data` and `pipeline.model`.
"""
