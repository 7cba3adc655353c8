"""q2-reward: ranked answers -> preference pairs -> TRL reward model -> exact pairwise accuracy."""

__version__ = "0.1.0"
