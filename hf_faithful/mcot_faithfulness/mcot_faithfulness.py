"""mcot_faithfulness: is a "thinking with images" model's visual reasoning faithful?

Accuracy, ATE_T and ATE_V (arXiv 2510.23482) with paired bootstrap intervals and exact
McNemar p-values, and the judge metrics reliability and sufficiency, from per-sample
columns. A thin wrapper over ``hf_faithful.faithfulness.metric.compute_faithfulness``.
"""

import datasets
import evaluate

from hf_faithful.faithfulness.metric import compute_faithfulness

_CITATION = """\
@misc{liu2025sccm,
  author       = {Liu and Pan and others},
  title        = {Faithfulness of visual thinking and the Sufficient-Component Cause Model},
  howpublished = {arXiv:2510.23482},
  year         = {2025},
  note         = {Title paraphrased; see https://arxiv.org/abs/2510.23482}
}
"""

_DESCRIPTION = """\
Measures how much a multimodal chain of thought (text reasoning T, zoomed-in crops V,
answer A) relies on its text and on its crops. ATE_T is the change of accuracy when the
reasoning text is corrupted (crops kept), ATE_V the change when every crop is replaced by
noise (text kept): ATE_V near zero while ATE_T is large means the crops are ignored.
Intervals come from a paired bootstrap, p-values from the exact McNemar test. Judge
columns give the mean reliability and sufficiency of the crops.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the model's answers from the untouched traces (use ""
        for a missing answer: it counts as wrong).
    references (`list` of `str`): the reference answers.
    textual_predictions (`list` of `str`, optional): answers regenerated after do(T).
    visual_predictions (`list` of `str`, optional): answers regenerated after do(V).
    reliability (`list` of `float` or None, optional): judge reliability per sample, 0..1.
    sufficiency (`list` of `float` or None, optional): judge sufficiency per sample, 0/1.
    match (`str` or callable, default "exact"): "exact" (normalized exact match),
        "choice" (multiple-choice letter) or a callable (prediction, reference) -> bool.
    n_resamples (`int`, default 10000): bootstrap resamples.
    confidence (`float`, default 0.95): interval level.
    seed (`int`, default 0): bootstrap seed.
Returns:
    accuracy, accuracy_ci_low, accuracy_ci_high, n; with textual_predictions:
    textual_accuracy, ate_t, ate_t_ci_low, ate_t_ci_high, ate_t_p_value, ate_t_flipped;
    likewise visual_accuracy and ate_v*; with judge columns: reliability, sufficiency,
    their intervals and *_n_scored (None scores are left out).
Examples:
    >>> metric = evaluate.load("hf_faithful/mcot_faithfulness")
    >>> out = metric.compute(
    ...     predictions=["red", "blue", "B", "3"],
    ...     references=["red", "blue", "B", "3"],
    ...     textual_predictions=["green", "blue", "A", "4"],
    ...     visual_predictions=["red", "blue", "B", "3"],
    ... )
    >>> out["ate_t"], out["ate_v"]
    (-0.75, 0.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class McotFaithfulness(evaluate.Metric):
    """Faithfulness of visual thinking: ATE_T, ATE_V, reliability and sufficiency."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2510.23482"],
        )

    def _compute(
        self,
        predictions,
        references,
        textual_predictions=None,
        visual_predictions=None,
        reliability=None,
        sufficiency=None,
        match="exact",
        n_resamples=10_000,
        confidence=0.95,
        seed=0,
    ):
        return compute_faithfulness(
            predictions,
            references,
            textual_predictions,
            visual_predictions,
            reliability,
            sufficiency,
            match=match,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
        )
