"""`evaluate` module: LLaVA-Med's published VQA metric, flaws included (``legacy`` mode of `vital`).

import evaluate
metric = evaluate.load("vital/metrics/vqa_legacy")
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
The VQA metric of LLaVA-Med (v1.0.0), reproduced exactly so that scores on VQA-RAD, SLAKE and PathVQA compare with
published numbers: closed accuracy by substring matching behind a yes/no substring gate, open recall with the
prediction's word multiplicity, normalisation with a global punctuation switch and a cap of 32 periods, and the BLEU,
BLEU-1/2/3 of the open answers that LLaVA-Med's run_eval.py prints. Config "batch" (`evaluate.load(path, "batch")`)
is its run_eval_batch.py instead: closed hits without the yes/no gate, plus "open accuracy" (`open_hit`). See the
`vqa_strict` module for the same metric with those flaws fixed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated answers.
    references (`list` of `str`): ground-truth answers, matched by position.
    answer_types (`list` of `str`): "OPEN" or "CLOSED" per item (case-insensitive).
Returns:
    closed_accuracy (`float` or `None`): mean closed hit ×100 (None without closed items).
    open_recall (`float` or `None`): mean open recall ×100, the number papers report.
    open_precision, open_f1, open_exact_match (`float` or `None`): the other open numbers the original prints
        ("exact match" is a precision despite its name).
    open_bleu, open_bleu_1, open_bleu_2, open_bleu_3 (`float` or `None`): nltk sentence_bleu ×100, as run_eval.py.
    open_hit (`float` or `None`, config "batch" only): the ground truth as a substring of the prediction ×100.
    n_closed, n_open (`int`): item counts.
    item_scores (`list` of `float`): per item, the closed hit (0/1) or the open recall (0-1).
    mode (`str`): "legacy" or "legacy_batch".
Examples:
    >>> metric = evaluate.load("vital/metrics/vqa_legacy")
    >>> out = metric.compute(predictions=["nodule", "left left left"], references=["no", "left lung"],
    ...                      answer_types=["CLOSED", "OPEN"])
    >>> out["closed_accuracy"], out["open_recall"]
    (100.0, 75.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaLegacy(ArrowSafeInputs, evaluate.Metric):
    """LLaVA-Med's published VQA metric (closed accuracy, open recall), flaws included."""

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
        # config "batch": LLaVA-Med's run_eval_batch.py (no yes/no gate on closed questions)
        mode = "legacy_batch" if self.config_name == "batch" else "legacy"
        return score_vqa(self.unescaped(predictions), self.unescaped(references), answer_types, mode=mode)
