"""Exact pairwise accuracy of a reward model: the fraction of pairs with score(chosen) > score(rejected)."""

import datasets
import evaluate
import numpy as np
from typing_extensions import override

_DESCRIPTION = """
Exact pairwise accuracy over every pair given: a pair is correct when the chosen answer's score is strictly
greater than the rejected answer's. Ties count as wrong and are reported separately.
"""

_KWARGS_DESCRIPTION = """
Args:
    chosen_scores (`list[float]`): reward of the preferred answer of each pair.
    rejected_scores (`list[float]`): reward of the other answer of the same pair.
Returns:
    pairwise_accuracy (`float`): correct pairs / all pairs.
    num_pairs (`int`): number of pairs.
    num_correct (`int`): pairs with chosen > rejected.
    num_ties (`int`): pairs with chosen == rejected (counted as wrong).
Examples:
    >>> metric = evaluate.load("pipeline/evaluation/metric_modules/pairwise_accuracy")
    >>> metric.compute(chosen_scores=[1.0, 0.5, 2.0], rejected_scores=[0.0, 0.5, 3.0])
    {'pairwise_accuracy': 0.3333333333333333, 'num_pairs': 3, 'num_correct': 1, 'num_ties': 1}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PairwiseAccuracy(evaluate.Metric):
    @override
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"chosen_scores": datasets.Value("float64"), "rejected_scores": datasets.Value("float64")}
            ),
        )

    @override
    def _compute(self, chosen_scores, rejected_scores):
        chosen = np.asarray(chosen_scores, dtype=np.float64)
        rejected = np.asarray(rejected_scores, dtype=np.float64)
        num_pairs = int(chosen.size)
        num_correct = int((chosen > rejected).sum())
        return {
            "pairwise_accuracy": num_correct / num_pairs if num_pairs else float("nan"),
            "num_pairs": num_pairs,
            "num_correct": num_correct,
            "num_ties": int((chosen == rejected).sum()),
        }
