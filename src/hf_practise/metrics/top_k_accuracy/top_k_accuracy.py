"""Top-k accuracy as an `evaluate` metric module, shipped with hf_practise so it loads offline.

Inputs: `predictions`, for each example its k highest-scoring class ids (best first), and `references`, the true
class ids. An example counts when its reference is among its first `k` predictions (default: all given).
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of examples whose true class is among the k classes the model scores highest."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): each example's highest-scoring class ids, best first.
    references (list of int): true class ids.
    k (int, optional): how many of the predictions count (default: all of them).
Returns:
    top_k_accuracy (float): the fraction of references found among their first k predictions, in [0, 1].
    k (int): the k used.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k=None):
        if len(references) == 0:
            raise ValueError("top-k accuracy of no examples: the eval set is empty")
        k = k or max(len(p) for p in predictions)
        hits = sum(int(r in list(p)[:k]) for p, r in zip(predictions, references))
        return {"top_k_accuracy": hits / len(references), "k": k}
