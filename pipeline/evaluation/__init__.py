"""Evaluation: exact pairwise accuracy (an `evaluate` metric module shipped in `metric_modules/`), intervals, rank-gap
and listwise metrics, baselines, and the report (`python -m pipeline.evaluation` for any saved model). Pairs are read
by the data step and scored by the model's scoring engine.

May import `pipeline.core`, `pipeline.data` and `pipeline.model`.
"""
