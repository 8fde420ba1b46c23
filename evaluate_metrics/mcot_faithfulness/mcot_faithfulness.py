"""mcot_faithfulness: is a "thinking with images" model's visual reasoning faithful?

Accuracy, ATE_T and ATE_V (arXiv 2510.23482) with paired bootstrap intervals and exact
McNemar p-values, and the judge metrics reliability and sufficiency, from per-sample
columns. A thin wrapper over ``hf_faithful.faithfulness.metric.compute_faithfulness``.
"""

import datasets
import evaluate

from hf_faithful.faithfulness.metric import compute_faithfulness, validate_columns

# Columns a caller may leave out; every column is declared in the features so that
# add_batch / add can carry it, and the ones left out are tracked, not stored as data.
_OPTIONAL = ("textual_predictions", "visual_predictions", "reliability", "sufficiency")
_STRING = ("predictions", "references", "textual_predictions", "visual_predictions")

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
    predictions (`list` of `str` or None): the model's answers from the untouched traces
        (None or "" for a missing answer: it counts as wrong).
    references (`list` of `str`): the reference answers; None or "" is refused.
    textual_predictions (`list` of `str` or None, optional): answers regenerated after do(T).
    visual_predictions (`list` of `str` or None, optional): answers regenerated after do(V).
    reliability (`list` of `float` or None, optional): judge reliability per sample, 0..1
        (None = not scored); values outside 0..1 (a 0-10 rating) are refused.
    sufficiency (`list` of `float` or None, optional): judge sufficiency per sample, 0/1.
    match (`str` or callable, default "exact"): "exact" (normalized exact match),
        "choice" (multiple-choice letter) or a callable (prediction, reference) -> bool.
    n_resamples (`int`, default 10000): bootstrap resamples.
    confidence (`float`, default 0.95): interval level.
    seed (`int`, default 0): bootstrap seed.
    Every column can also be given to `add_batch` / `add`; every batch must hold the same
    columns. A bad value raises ValueError naming the column and the sample index.
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
                {
                    **{name: datasets.Value("string") for name in _STRING},
                    "reliability": datasets.Value("float64"),
                    "sufficiency": datasets.Value("float64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2510.23482"],
        )

    # evaluate requires every declared column in each batch and checks the type of the
    # first value only, so the wrappers below validate whole batches (naming column and
    # sample index), fill the columns left out and remember which ones were given.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of per-sample columns (see the module's inputs)."""
        unknown = sorted(set(kwargs) - set(_OPTIONAL))
        if unknown:
            raise ValueError(
                f"unknown columns {unknown}; the columns are {list(self._column_names)}"
            )
        columns = {"predictions": predictions, "references": references, **kwargs}
        given = tuple(name for name in self._column_names if columns.get(name) is not None)
        first = getattr(self, "_given", None)
        if first is not None and given != first:
            raise ValueError(
                f"every batch must hold the same columns: this one has {list(given)}, "
                f"the first had {list(first)}"
            )
        start = getattr(self, "_n_added", 0)
        n = validate_columns({name: columns.get(name) for name in given}, start=start)
        batch = {}
        for name in self._column_names:
            values = columns.get(name)
            if values is None:  # left out: stored as a placeholder, dropped in _compute
                values = [None] * n
            if name in _STRING:  # no answer: "" (evaluate refuses None as a first value)
                values = ["" if v is None else v for v in values]
            batch[name] = [float(v) if isinstance(v, bool) else v for v in values]
        super().add_batch(**batch)
        self._given, self._n_added = given, start + n

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one sample; optional columns by their plural name (``textual_predictions=``)."""
        self.add_batch(
            predictions=[prediction],
            references=[reference],
            **{name: [value] for name, value in kwargs.items()},
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute over the batches added so far and the columns given here, if any."""
        columns = {name: kwargs.pop(name) for name in _OPTIONAL if name in kwargs}
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references, **columns)
        elif any(value is not None for value in columns.values()):
            raise ValueError("columns given without predictions and references")
        out = super().compute(**kwargs)
        self._given, self._n_added = None, 0  # evaluate has emptied its data as well
        return out

    @property
    def _column_names(self):
        return tuple(self._feature_names())

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
        given = getattr(self, "_given", None) or ("predictions", "references")
        columns = {
            name: values if name in given else None
            for name, values in (
                ("textual_predictions", textual_predictions),
                ("visual_predictions", visual_predictions),
                ("reliability", reliability),
                ("sufficiency", sufficiency),
            )
        }
        return compute_faithfulness(
            predictions,
            references,
            **columns,
            match=match,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
        )
