"""Top-1 accuracy as an `evaluate` metric module, shipped with hf_practise so it loads offline.

`evaluate.load("accuracy")` fetches its script from the Hub; this folder holds the same kind of module, and
`evaluate.load(path_to_this_folder)` needs no network. Inputs: `predictions` (predicted class ids) and
`references` (true class ids).
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of examples whose predicted class id equals the reference class id (top-1 accuracy)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy (float): the fraction of predictions equal to their reference, in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("accuracy of no examples: the eval set is empty")
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(references)}
