"""FaithfulnessEvaluator: the whole measurement of arXiv 2510.23482, section "faithfulness".

1. Traces: read ready ones, or generate them with the model and the zoom-in tool.
2. Interventions: ``do(T)`` (corrupted reasoning) and ``do(V)`` (replaced crops); the
   model under test regenerates the answer from each intervened prefix, plus once from
   the untouched prefix (the *control*), all in one batched pass.
3. Effects: accuracy per condition, ``ATE_T`` and ``ATE_V`` with Newcombe's paired score
   intervals, exact McNemar p-values and the flipped samples, from
   :func:`~hf_faithful.faithfulness.stats.intervention_effects` (the same core as the
   ``mcot_faithfulness`` metric). Each effect is estimated over the traces its
   intervention changed: a trace without crops is not intervened on by ``do(V)`` (nor one
   without reasoning text by ``do(T)``, nor one whose crop is the whole image by
   ``other_region``), and counting it as an unchanged pair would pull the ATE towards 0.
   Its answer is the control's (same input), and it is not asked again.
4. Judge: reliability and sufficiency of the crops.
5. Warnings and provenance: a baseline or control accuracy at floor (0) or ceiling (1)
   makes the effects unreadable (every ATE 0 with p = 1 is then no evidence of anything),
   and a reply without answer counts as wrong; both are said loudly in the report, which
   also records the model, judge, data, settings and package version.

The baseline of the ATEs is the control by default: the answer regenerated with the same
prompt and decoding, so the effect is the intervention's alone and not a difference
between the original generation and the regeneration procedure (``baseline="original"``
uses the traces' own answers, as the paper's definition reads). Invalid traces are left
out and listed with their errors; a sample without reference is scored against the
trace's own answer (the ATE then measures how often the answer changes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from hf_faithful import __version__
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.interventions import intervene_text, intervene_visual
from hf_faithful.faithfulness.judge import FaithfulnessJudge
from hf_faithful.faithfulness.report import FaithfulnessReport
from hf_faithful.faithfulness.stats import intervention_effects, mean_score
from hf_faithful.mcot.answers import match_answers
from hf_faithful.mcot.backends import AnswerBackend
from hf_faithful.mcot.messages import answer_from_reply, parse_tool_call, tool_response_content
from hf_faithful.mcot.parsing import parse_deepeyes
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import InvalidBoxError, zoom_in

__all__ = ["FaithfulnessEvaluator", "describe_backend", "same_input"]


class FaithfulnessEvaluator:
    """Measure how much a "thinking with images" model relies on its text and its crops.

    Args:
        model: the model under test (regenerates answers; generates traces if asked), or
            None to only judge ready traces.
        judge: backend of the reliability / sufficiency judge (optional).
        rewriter: backend that corrupts the reasoning for ``do(T)`` (optional; default
            offline corruptions).
        config: :class:`FaithfulnessConfig`.
    """

    def __init__(
        self,
        model: AnswerBackend | None = None,
        *,
        judge: AnswerBackend | None = None,
        rewriter: AnswerBackend | None = None,
        config: FaithfulnessConfig | None = None,
    ) -> None:
        for name, backend in (("model", model), ("judge", judge), ("rewriter", rewriter)):
            if backend is not None and not isinstance(backend, AnswerBackend):
                raise TypeError(f"{name} must have an answer(prompts, max_new_tokens, stop) method")
        self.model = model
        self.judge = judge
        self.rewriter = rewriter
        self.config = config or FaithfulnessConfig()

    def generate_traces(self, samples: Sequence[Mapping[str, Any]]) -> list[Trace]:
        """Run the model with the zoom-in tool on ``{"image", "question", "reference"?,
        "id"?}`` samples, all samples batched turn by turn, DeepEyes-style."""
        if self.model is None:
            raise ValueError("generate_traces needs a model")
        cfg = self.config
        states = []
        for i, sample in enumerate(samples):
            if not isinstance(sample.get("image"), Image.Image) or not sample.get("question"):
                raise ValueError(f"samples[{i}] needs a PIL 'image' and a 'question'")
            opening = Trace(sample["question"], sample["image"])
            messages = opening.to_messages(
                system_prompt=cfg.resolved_system_prompt,
                user_template=cfg.user_template,
                include_answer=False,
            )
            states.append(
                {"sample": sample, "messages": messages, "text": "", "crops": [], "done": False}
            )
        for turn in tqdm(range(cfg.max_tool_calls + 1), desc="trace turns", leave=False):
            active = [s for s in states if not s["done"]]
            if not active:
                break
            replies = self.model.answer(
                [s["messages"] for s in active], cfg.max_turn_tokens, stop=["</tool_call>"]
            )
            for state, reply in zip(active, replies):
                if "<tool_call>" in reply and "</tool_call>" not in reply:
                    reply += "</tool_call>"  # the stop string is cut off
                state["text"] += reply
                call = reply.rsplit("<tool_call>", 1)[-1] if "<tool_call>" in reply else None
                if call is None or "<answer>" in reply or turn == cfg.max_tool_calls:
                    state["done"] = True
                    continue
                state["messages"].append(
                    {"role": "assistant", "content": [{"type": "text", "text": reply}]}
                )
                response = self._tool_response(
                    state["sample"]["image"], call.removesuffix("</tool_call>")
                )
                if isinstance(response, Image.Image):
                    state["crops"].append(response)
                content = tool_response_content(response)
                state["messages"].append({"role": "user", "content": content})
                state["text"] += "\n<tool_response><image></tool_response>\n"
        traces = []
        for i, (state, sample) in enumerate(zip(states, samples)):
            trace = parse_deepeyes(
                state["text"],
                sample["image"],
                sample["question"],
                crops=state["crops"],
                rules=cfg.box_rules,
                max_tool_calls=cfg.max_tool_calls,
                reference=sample.get("reference"),
                id=str(sample.get("id", i)),
                source=sample.get("source"),
            )
            trace.metadata["response"] = state["text"]
            traces.append(trace)
        return traces

    def _tool_response(self, image: Image.Image, call: str) -> Image.Image | str:
        try:
            bbox, _ = parse_tool_call(call)
            return zoom_in(image, bbox, self.config.box_rules)
        except (InvalidBoxError, ValueError) as err:
            return str(err)

    def _regenerate(self, conditions: Mapping[str, Sequence[Trace]]) -> dict[str, list[str | None]]:
        """Answers of the model from each condition's prefixes, in one batched call; None
        where the reply holds no answer (regeneration failed)."""
        cfg = self.config
        names, prompts = [], []
        for name, traces in conditions.items():
            for trace in traces:
                names.append(name)
                prompts.append(
                    trace.to_messages(
                        system_prompt=cfg.resolved_system_prompt,
                        user_template=cfg.user_template,
                        include_answer=False,
                        prefill_answer=cfg.prefill_answer,
                    )
                )
        replies = self.model.answer(prompts, cfg.max_new_tokens, stop=["</answer>"])
        out: dict[str, list[str | None]] = {name: [] for name in conditions}
        for name, reply in zip(names, replies):
            out[name].append(answer_from_reply(reply, prefilled=cfg.prefill_answer) or None)
        return out

    def provenance(self) -> dict[str, Any]:
        """What produced a report: package version, model, judge, rewriter and settings
        (``data`` is filled in by whoever knows the file, e.g. the CLI)."""
        return {
            "hf_faithful_version": __version__,
            "model": describe_backend(self.model),
            "judge": describe_backend(self.judge),
            "rewriter": describe_backend(self.rewriter),
            "data": None,
            "settings": self.config.to_dict(),
        }

    def evaluate(
        self, traces: Sequence[Trace], *, provenance: Mapping[str, Any] | None = None
    ) -> FaithfulnessReport:
        """Measure ATE_T, ATE_V (with intervals), accuracy and the judge metrics.

        ``provenance`` adds to (or refines) :meth:`provenance` in the report, e.g.
        ``{"data": data_provenance(path), "model": {"name": ...}}``; dicts are merged.
        """
        cfg = self.config
        valid = [t for t in traces if t.valid]
        stats = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
        references = [t.reference if t.reference is not None else t.answer for t in valid]
        original = match_answers([t.answer for t in valid], references, cfg.match)
        samples = [
            {
                "id": t.id,
                "source": t.source,
                "reference": t.reference,
                "answer": t.answer,
                "n_crops": len(t.crops),
                "answers": {},
                "correct": {"original": c},
            }
            for t, c in zip(valid, original)
        ]
        report = FaithfulnessReport(
            n_traces=len(traces),
            n_valid=len(valid),
            invalid=[
                {"source": t.source, "id": t.id, "errors": list(t.errors)}
                for t in traces
                if not t.valid
            ],
            accuracy=mean_score([float(c) for c in original], **stats) if valid else None,
            control_accuracy=None,
            effects={},
            ate_t=None,
            ate_v=None,
            reliability=None,
            sufficiency=None,
            samples=samples,
            config=cfg.to_dict(),
            provenance=_merged(self.provenance(), provenance or {}),
        )
        if self.model is not None and valid:
            self._measure_effects(valid, references, original, report, stats)
        if self.judge is not None and valid and cfg.judge_metrics:
            self._judge(valid, report, stats)
        return report

    def _conditions(self, valid: Sequence[Trace]) -> dict[str, Sequence[Trace]]:
        """The untouched traces (``control``) and one intervened copy per intervention."""
        cfg = self.config
        conditions: dict[str, Sequence[Trace]] = {"control": valid}
        if cfg.text_corruptions or self.rewriter is not None:
            text_name = "T:" + ("rewriter" if self.rewriter is not None else "offline")
            conditions[text_name] = intervene_text(
                valid, rewriter=self.rewriter, kinds=cfg.text_corruptions, seed=cfg.seed
            )
        for kind in cfg.visual_interventions:
            if kind == "shuffle" and sum(bool(t.crops) for t in valid) < 2:
                continue  # nothing to shuffle between
            conditions[f"V:{kind}"] = intervene_visual(valid, kind, seed=cfg.seed)
        return conditions

    def _measure_effects(
        self,
        valid: Sequence[Trace],
        references: Sequence[str | None],
        original: Sequence[bool],
        report: FaithfulnessReport,
        stats: dict[str, Any],
    ) -> None:
        """Regenerate the answers from the untouched prefixes and from every prefix an
        intervention changed; fill in the effects, n_intervened and the warnings."""
        cfg = self.config
        conditions = self._conditions(valid)
        changed = {
            name: [not same_input(trace, new) for trace, new in zip(valid, traces)]
            for name, traces in conditions.items()
            if name != "control"
        }
        asked = {"control": list(valid)} | {
            name: [t for t, c in zip(conditions[name], changed[name]) if c] for name in changed
        }
        replies = self._regenerate(asked)
        answers = {"control": replies["control"]}
        for name, flags in changed.items():  # an unchanged input gets the control's answer
            fresh = iter(replies[name])
            answers[name] = [
                next(fresh) if c else answers["control"][i] for i, c in enumerate(flags)
            ]
        correct = {name: match_answers(a, references, cfg.match) for name, a in answers.items()}
        failed: dict[str, list[int]] = {}
        for i, sample in enumerate(report.samples):
            sample["intervened"] = {name: flags[i] for name, flags in changed.items()}
            sample["regeneration_failed"] = []
            for name in answers:
                answer = answers[name][i]
                sample["answers"][name] = answer or ""
                sample["correct"][name] = correct[name][i]
                if answer is None and (name == "control" or changed[name][i]):
                    failed.setdefault(name, []).append(i)
                    sample["regeneration_failed"].append(name)
        control = correct.pop("control")
        report.control_accuracy = mean_score([float(c) for c in control], **stats)
        base = control if cfg.baseline == "control" else original
        result = intervention_effects(base, correct, changed=changed, **stats)
        report.effects, report.ate_t, report.ate_v = result.effects, result.ate_t, result.ate_v
        report.n_intervened = {name: sum(flags) for name, flags in changed.items()}
        report.warnings += _accuracy_warnings(report, original, control)
        report.warnings += _regeneration_warnings(report, failed)
        report.warnings += [
            f"{name} changed none of the {len(valid)} valid traces (no crops, no reasoning "
            "text, or crops that are the whole image): no effect is estimated for it."
            for name in result.unchanged
        ]
        report.warnings += [
            f"V:{kind} was skipped: it needs at least 2 valid traces with crops."
            for kind in cfg.visual_interventions
            if f"V:{kind}" not in conditions
        ]

    def _judge(
        self, valid: Sequence[Trace], report: FaithfulnessReport, stats: dict[str, Any]
    ) -> None:
        judged = FaithfulnessJudge(self.judge, match=self.config.match).score(
            valid, self.config.judge_metrics
        )
        for name in ("reliability", "sufficiency"):
            scores = getattr(judged, name)
            if not scores:
                continue
            for sample, score in zip(report.samples, scores):
                sample[name] = score
            setattr(report, name, mean_score(scores, **stats))


def _same_image(a: Image.Image | None, b: Image.Image | None) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    return a.size == b.size and a.mode == b.mode and a.tobytes() == b.tobytes()


def same_input(a: Trace, b: Trace) -> bool:
    """Whether the model sees the same prefix in both traces (question, image, reasoning,
    tool calls and crop pixels): an "intervention" that leaves it so is not one."""
    if a.question != b.question or not _same_image(a.image, b.image):
        return False
    if len(a.steps) != len(b.steps):
        return False
    for s, t in zip(a.steps, b.steps):
        if (s.kind, s.text, s.bbox, s.label, s.error) != (t.kind, t.text, t.bbox, t.label, t.error):
            return False
        if not _same_image(s.crop, t.crop):
            return False
    return True


def describe_backend(backend: Any) -> dict[str, Any] | None:
    """Enough of a backend to say which model answered: class, model name or path,
    endpoint, decoding settings, answer cache (best effort; None without a backend)."""
    if backend is None:
        return None
    out: dict[str, Any] = {}
    if hasattr(backend, "backend") and hasattr(backend, "namespace"):  # CachedBackend
        out["cache"] = str(getattr(backend, "path", ""))
        out["cache_namespace"] = backend.namespace
        backend = backend.backend
    out["backend"] = type(backend).__name__
    model = getattr(backend, "model", None)
    if isinstance(model, str):
        out["model"] = model
    elif model is not None:
        config = getattr(model, "config", None)
        out["model"] = (
            getattr(model, "name_or_path", None)
            or getattr(config, "_name_or_path", None)
            or type(model).__name__
        )
        if config is not None and getattr(config, "model_type", None):
            out["model_type"] = config.model_type
    if getattr(backend, "url", None):
        out["endpoint"] = backend.url
    for name in ("generation_kwargs", "temperature", "seed"):
        if getattr(backend, name, None) is not None:
            out[name] = getattr(backend, name)
    return out


def _merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _bound(value: float | None) -> str | None:
    if value == 0:
        return "0 (floor)"
    if value == 1:
        return "1 (ceiling)"
    return None


def _accuracy_warnings(
    report: FaithfulnessReport, original: Sequence[bool], control: Sequence[bool]
) -> list[str]:
    """Floor and ceiling of the accuracies the effects rest on: at 0 no intervention can
    lower accuracy, at 1 none can raise it, so "every ATE is 0, p = 1" would read as
    "depends on nothing" when nothing could be seen; and a control far below the original
    answers means the regeneration, not the intervention, decides the answers."""
    baseline = report.config.get("baseline", "control")
    accuracy = {"control": sum(control) / len(control), "original": sum(original) / len(original)}
    what = "control" if baseline == "control" else "baseline (original answers)"
    out = []
    bound = _bound(accuracy[baseline])
    if bound == "0 (floor)":
        out.append(
            f"{what} accuracy is {bound}: no intervention can lower it, so an ATE of 0 with "
            "p = 1 here is NOT evidence that the model ignores its text or crops."
        )
    elif bound:
        out.append(
            f"{what} accuracy is {bound}: an intervention can only lower it, so a gain "
            "cannot be seen (a loss still can)."
        )
    if accuracy["control"] == 0 and accuracy["original"] > 0:
        out.append(
            "control accuracy is 0 while the original answers score "
            f"{accuracy['original']:.3f}: the answer regenerated from the untouched prefix "
            "is always wrong, and every intervened answer is regenerated the same way, so "
            "the effects measure the regeneration, not the interventions. Check "
            "prefill_answer, the chat template, max_new_tokens and the answer matching."
        )
    for name, effect in report.effects.items():
        where = _bound(effect.baseline_accuracy)
        if where and where != bound:
            can = "rise" if where.startswith("0") else "fall"
            out.append(
                f"{name}: the baseline accuracy over the {effect.n} traces it changed is "
                f"{where}: accuracy can only {can} there, so its effect is one-sided."
            )
    return out


def _regeneration_warnings(
    report: FaithfulnessReport, failed: Mapping[str, list[int]]
) -> list[str]:
    """A reply without an answer counts as wrong: a failing regeneration would pass for an
    effect of the intervention."""
    out = []
    for name, indices in failed.items():
        ids = [
            str(report.samples[i]["id"] if report.samples[i]["id"] is not None else i)
            for i in indices
        ]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        out.append(
            f"regeneration failed under {name} for {len(indices)} of {report.n_valid} "
            f"samples (no answer in the reply; counted as wrong): {shown}."
        )
    return out
