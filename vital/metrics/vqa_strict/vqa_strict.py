"""`evaluate` module: the VQA metric with LLaVA-Med's flaws fixed (``strict`` mode of `vital`).

import evaluate
metric = evaluate.load("vital/metrics/vqa_strict")
metric.compute(predictions=["yes"], references=["yes"], answer_types=["CLOSED"])
"""

import datasets
import evaluate

from vital.evaluation.vqa_metrics import ArrowSafeInputs, score_vqa


_CITATION = """\
@inproceedings{li2023llavamed,
  title={{LLaVA-Med}: Training a Large Language-and-Vision Assistant for Biomedicine in One Day},
  author={Li, Chunyuan and Wong, Cliff and Zhang, Sheng and Usuyama, Naoto and Liu, Haotian and Yang, Jianwei and
          Naumann, Tristan and Poon, Hoifung and Gao, Jianfeng},
  booktitle={NeurIPS Datasets and Benchmarks Track},
  year={2023}
}
"""

_DESCRIPTION = """\
The VQA metric of LLaVA-Med with its known flaws fixed: closed answers are read from the first yes/no word of the
prediction (none: a miss, counted as unanswered), open recall is the share of distinct ground-truth words found as
words, punctuation is decided per mark and periods are not capped. Number words, articles and contractions are handled
as in `vqa_legacy`, so the two can be compared item by item.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated answers.
    references (`list` of `str`): ground-truth answers, matched by position.
    answer_types (`list` of `str`): "OPEN" or "CLOSED" per item (case-insensitive).
Returns:
    closed_accuracy (`float` or `None`): mean closed hit ×100 (None without closed items).
    open_recall (`float` or `None`): mean share of distinct ground-truth words found ×100.
    n_closed, n_open (`int`): item counts.
    n_closed_unanswered (`int`): closed items whose prediction has no yes/no word (counted as misses).
    item_scores (`list` of `float`): per item, the closed hit (0/1) or the open recall (0-1).
    item_unanswered (`list` of `bool`): per item, True for an unanswered closed item.
    mode (`str`): "strict".
Examples:
    >>> metric = evaluate.load("vital/metrics/vqa_strict")
    >>> out = metric.compute(predictions=["nodule", "left left left"], references=["no", "left lung"],
    ...                      answer_types=["CLOSED", "OPEN"])
    >>> out["closed_accuracy"], out["open_recall"], out["n_closed_unanswered"]
    (0.0, 50.0, 1)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaStrict(ArrowSafeInputs, evaluate.Metric):
    """The VQA metric with LLaVA-Med's flaws fixed (word-level closed answers and open recall)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "answer_types": datasets.Value("string"),
                }
            ),
            reference_urls=["https://github.com/microsoft/LLaVA-Med"],
        )

    def _compute(self, predictions, references, answer_types):
        return score_vqa(self.unescaped(predictions), self.unescaped(references), answer_types, mode="strict")
