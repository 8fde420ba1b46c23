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
   With ``regenerate_continuation`` the reasoning after the last crop is regenerated
   too (from the tool's response on), under the control and under each ``do(V)``: the
   answer-only ``ATE_V`` holds the post-crop reasoning fixed, written after the real
   crop, which pulls it towards 0 by construction; both are reported, named apart.
4. Judge: reliability and sufficiency of the crops, and (``validate_judge``) how often
   the judge agrees with exact match, or with given labels, on whether an answer is right.
5. Warnings and provenance: a baseline or control accuracy at floor (0) or ceiling (1)
   makes the effects unreadable (every ATE 0 with p = 1 is then no evidence of anything),
   and a reply without answer counts as wrong; both are said loudly in the report, which
   also records the model, judge, data, settings and package version.

How the answer is regenerated follows the backend (``prefill_answer`` unset): a local
model or an endpoint that continues an assistant turn gets a prefilled ``<answer>``;
another endpoint would open a new turn after the prefill and its whole reply would be read
as the answer, so it is asked in a fresh user turn (``answer_prompt``) and its ``<answer>``
is read. Prefilled replies that look like a new turn are warned about. A tool call the
tool refused leaves its trace valid (the model saw the error and went on, as in DeepEyes);
the report counts them. A request an endpoint refuses costs its record only: the trace
is invalid (generation) or the answer missing (regeneration), and the report says so.

The baseline of the ATEs is the control by default: the answer regenerated with the same
prompt and decoding, so the effect is the intervention's alone and not a difference
between the original generation and the regeneration procedure (``baseline="original"``
uses the traces' own answers, as the paper's definition reads). Invalid traces are left
out and listed with their errors; a sample without reference is scored against the
trace's own answer (the ATE then measures how often the answer changes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from hf_faithful import __version__
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.interventions import intervene_text, intervene_visual
from hf_faithful.faithfulness.judge import FaithfulnessJudge
from hf_faithful.faithfulness.report import FaithfulnessReport
from hf_faithful.faithfulness.stats import intervention_effects, mean_score
from hf_faithful.mcot.answers import answers_match, extract_answer, match_answers
from hf_faithful.mcot.backends import AnswerBackend, BackendError, answer_each, can_continue
from hf_faithful.mcot.messages import answer_from_reply, parse_tool_call, tool_response_content
from hf_faithful.mcot.parsing import parse_deepeyes
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import InvalidBoxError, zoom_in

__all__ = ["FaithfulnessEvaluator", "describe_backend", "looks_like_new_turn", "same_input"]

AnswerMode = Literal["prefill", "continue", "fresh_turn"]
CONTINUATION = " (continuation)"  # suffix of the conditions whose post-crop text is regenerated
_TURN_MARKUP_RE = re.compile(
    r"<(think|answer|tool_call)>|<\|im_start\|>|^\s*(assistant|user)\s*:", re.I | re.M
)


def looks_like_new_turn(reply: str, max_words: int = 12) -> bool:
    """Whether a reply to a prefilled ``<answer>`` reads as a whole new turn rather than the
    answer's continuation: it opens ``<think>``, ``<answer>`` or ``<tool_call>`` (or chat
    markup), spans several lines, or runs past ``max_words`` words, as a server that
    does not continue the assistant turn makes the model do."""
    if _TURN_MARKUP_RE.search(reply):
        return True
    lines = [line for line in reply.splitlines() if line.strip()]
    return len(lines) > 1 or len(reply.split()) > max_words


@dataclass
class _Regenerated:
    """Answers per condition (None: none in the reply), request errors, and what the
    replies looked like."""

    answers: dict[str, list[str | None]]
    errors: dict[str, list[str | None]]
    n_prefilled: int = 0
    new_turn: list[str] = field(default_factory=list)
    tool_calls: dict[str, int] = field(default_factory=dict)


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
            replies = answer_each(
                self.model,
                [s["messages"] for s in active],
                cfg.max_turn_tokens,
                stop=["</tool_call>"],
            )
            for state, reply in zip(active, replies):
                if isinstance(reply, BackendError):  # this record only; the others go on
                    state["error"] = f"model request failed at turn {turn + 1}: {reply}"
                    state["done"] = True
                    continue
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
                content = tool_response_content(response, cfg.tool_response, cfg.tool_error)
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
            if state.get("error"):
                trace.errors.append(state["error"])
            traces.append(trace)
        return traces

    def _tool_response(self, image: Image.Image, call: str) -> Image.Image | str:
        try:
            bbox, _ = parse_tool_call(call)
            return zoom_in(image, bbox, self.config.box_rules)
        except (InvalidBoxError, ValueError) as err:
            return str(err)

    def answer_mode(self) -> AnswerMode:
        """How answers are regenerated: ``prefill`` (continue a prefilled ``<answer>``),
        ``continue`` (continue the assistant turn) or ``fresh_turn`` (a user turn asks for
        the answer): ``prefill_answer``, or when unset what the model's backend can do."""
        continues = self.model is None or can_continue(self.model)
        prefill = self.config.prefill_answer
        if prefill is None:
            prefill = continues
        if prefill:
            return "prefill"
        return "continue" if continues else "fresh_turn"

    def _prompt(self, trace: Trace, mode: AnswerMode, continuation: bool) -> list[dict[str, Any]]:
        cfg = self.config
        messages = trace.to_messages(
            system_prompt=cfg.resolved_system_prompt,
            user_template=cfg.user_template,
            tool_response=cfg.tool_response,
            tool_error=cfg.tool_error,
            include_answer=False,
            prefill_answer=mode == "prefill" and not continuation,
            until_last_crop=continuation,
        )
        if mode == "fresh_turn" and not continuation:
            if messages[-1]["role"] == "user":  # after a tool response: same user turn
                messages[-1]["content"].append({"type": "text", "text": cfg.answer_prompt})
            else:
                messages.append(
                    {"role": "user", "content": [{"type": "text", "text": cfg.answer_prompt}]}
                )
        return messages

    def _regenerate(
        self, conditions: Mapping[str, Sequence[Trace]], *, continuation: bool = False
    ) -> _Regenerated:
        """Answers of the model from each condition's prefixes, in one batched call; None
        where the reply holds no answer (regeneration failed) or the request failed.

        ``continuation``: the prefixes stop after the last crop and the model writes the
        rest (reasoning and answer, ``max_turn_tokens``), read from its ``<answer>``."""
        cfg = self.config
        mode = self.answer_mode()
        names, prompts = [], []
        for name, traces in conditions.items():
            for trace in traces:
                names.append(name)
                prompts.append(self._prompt(trace, mode, continuation))
        if continuation:
            tokens, stop = cfg.max_turn_tokens, ["</answer>", "</tool_call>"]
        else:
            tokens, stop = cfg.max_new_tokens, ["</answer>"]
        replies = answer_each(self.model, prompts, tokens, stop=stop) if prompts else []
        out = _Regenerated({name: [] for name in conditions}, {name: [] for name in conditions})
        for name, reply in zip(names, replies):
            if isinstance(reply, BackendError):
                out.answers[name].append(None)
                out.errors[name].append(str(reply))
                continue
            out.errors[name].append(None)
            if continuation or mode == "fresh_turn":  # a new turn: only its <answer> counts
                answer = extract_answer(reply)
                if continuation and answer is None and "<tool_call>" in reply:
                    out.tool_calls[name] = out.tool_calls.get(name, 0) + 1
            else:
                answer = answer_from_reply(reply, prefilled=mode == "prefill")
                if mode == "prefill":
                    out.n_prefilled += 1
                    if looks_like_new_turn(reply):
                        out.new_turn.append(reply)
            out.answers[name].append(answer or None)
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
                "n_refused_calls": len(t.refused_calls),
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
            n_refused_calls=sum(len(t.refused_calls) for t in valid),
        )
        if self.model is not None and valid:
            report.answer_mode = self.answer_mode()
            report.provenance["answer_mode"] = report.answer_mode
            self._measure_effects(valid, references, original, report, stats)
        if self.judge is not None and valid and cfg.judge_metrics:
            self._judge(valid, report, stats)
        if self.judge is not None and valid and cfg.validate_judge:
            report.judge_agreement = self.validate_judge(valid)
            report.warnings += _agreement_warnings(report.judge_agreement)
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
            conditions[f"V:{kind}"] = intervene_visual(
                valid, kind, seed=cfg.seed, rules=cfg.box_rules
            )
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
        intervention changed (and, with ``regenerate_continuation``, the post-crop
        reasoning too); fill in the effects, n_intervened and the warnings."""
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
        regenerated = [self._regenerate(asked)]
        answers, errors = _spread(regenerated[0], changed, [True] * len(valid))
        asked_mask = {"control": [True] * len(valid)} | changed
        if cfg.regenerate_continuation:
            with_crops = [bool(t.crops) for t in valid]
            cont_changed = {
                name + CONTINUATION: [c and h for c, h in zip(changed[name], with_crops)]
                for name in changed
                if name.startswith("V:")
            }
            cont_asked = {"control": [t for t, h in zip(valid, with_crops) if h]} | {
                name + CONTINUATION: [t for t, c in zip(conditions[name], flags) if c]
                for name, flags in ((n[: -len(CONTINUATION)], f) for n, f in cont_changed.items())
            }
            regenerated.append(self._regenerate(cont_asked, continuation=True))
            cont_answers, cont_errors = _spread(
                regenerated[1], cont_changed, with_crops, fallback=answers["control"]
            )
            for name in cont_answers:
                key = "control" + CONTINUATION if name == "control" else name
                answers[key], errors[key] = cont_answers[name], cont_errors[name]
            changed |= cont_changed
            asked_mask |= cont_changed | {"control" + CONTINUATION: with_crops}
        correct = {name: match_answers(a, references, cfg.match) for name, a in answers.items()}
        failed: dict[str, list[int]] = {}
        for i, sample in enumerate(report.samples):
            sample["intervened"] = {name: flags[i] for name, flags in changed.items()}
            sample["regeneration_failed"] = []
            for name in answers:
                answer = answers[name][i]
                sample["answers"][name] = answer or ""
                sample["correct"][name] = correct[name][i]
                if errors[name][i] is not None:
                    sample.setdefault("request_errors", {})[name] = errors[name][i]
                if answer is None and asked_mask[name][i]:
                    failed.setdefault(name, []).append(i)
                    sample["regeneration_failed"].append(name)
        control = correct.pop("control")
        report.control_accuracy = mean_score([float(c) for c in control], **stats)
        base = control if cfg.baseline == "control" else original
        answer_only = {k: v for k, v in correct.items() if not k.endswith(CONTINUATION)}
        result = intervention_effects(
            base, answer_only, changed={k: changed[k] for k in answer_only}, **stats
        )
        report.effects, report.ate_t, report.ate_v = result.effects, result.ate_t, result.ate_v
        unchanged = list(result.unchanged)
        if cfg.regenerate_continuation:
            cont_control = correct.pop("control" + CONTINUATION)
            cont_base = cont_control if cfg.baseline == "control" else original
            cont = {k: v for k, v in correct.items() if k.endswith(CONTINUATION)}
            cont_result = intervention_effects(
                cont_base, cont, changed={k: changed[k] for k in cont}, **stats
            )
            report.effects |= cont_result.effects
            report.ate_v_continuation = cont_result.ate_v
            unchanged += cont_result.unchanged
        report.n_intervened = {name: sum(flags) for name, flags in changed.items()}
        report.warnings += _accuracy_warnings(report, original, control)
        report.warnings += _regeneration_warnings(report, failed, errors, self.answer_mode())
        report.warnings += _reply_warnings(regenerated)
        report.warnings += [
            f"{name} changed none of the {len(valid)} valid traces (no crops, no reasoning "
            "text, or crops that are the whole image): no effect is estimated for it."
            for name in unchanged
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

    def validate_judge(self, traces: Sequence[Trace], n: int | None = None) -> dict[str, Any]:
        """How far the judge can be trusted: on a seeded sample of ``n`` traces
        (``validate_judge``) with a reference or a ``judge_label``, the judge says whether
        the answer is right, and its verdicts are compared with the labels: the record's
        ``judge_label`` where given, else exact match (``match``) with the reference.
        Returns agreement (bootstrap interval), Cohen's kappa and the counts."""
        if self.judge is None:
            raise ValueError("validate_judge needs a judge")
        cfg = self.config
        n = cfg.validate_judge if n is None else n
        candidates = [
            t
            for t in traces
            if t.valid and (t.metadata.get("judge_label") is not None or t.reference is not None)
        ]
        rng = np.random.default_rng(cfg.seed)
        picked = sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))
        sample = [candidates[i] for i in picked]
        labels, sources = [], set()
        for trace in sample:
            given = trace.metadata.get("judge_label")
            if given is not None:
                labels.append(bool(given))
                sources.add("given labels")
            else:
                labels.append(answers_match(trace.answer, trace.reference, cfg.match))
                sources.add(f"{cfg.match if isinstance(cfg.match, str) else 'custom'} match")
        verdicts, replies = FaithfulnessJudge(self.judge, match=cfg.match).grade(sample)
        scored = [(v, y) for v, y in zip(verdicts, labels) if v is not None]
        agree = [float(v == y) for v, y in scored]
        stats = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
        return {
            "labels": " and ".join(sorted(sources)) or None,
            "n": len(sample),
            "n_unscored": len(sample) - len(scored),
            "agreement": mean_score(agree, **stats).to_dict() if agree else None,
            "cohen_kappa": _cohen_kappa(scored),
            "judge_says_right": sum(v for v, _ in scored),
            "labels_say_right": sum(y for _, y in scored),
            "disagreements": [
                {"id": t.id, "answer": t.answer, "reference": t.reference, "label": y,
                 "judge": v, "reply": r}
                for t, v, y, r in zip(sample, verdicts, labels, replies)
                if v is not None and v != y
            ][:20],
        }  # fmt: skip


def _spread(
    regenerated: _Regenerated,
    changed: Mapping[str, Sequence[bool]],
    asked_control: Sequence[bool],
    fallback: Sequence[str | None] | None = None,
) -> tuple[dict[str, list[str | None]], dict[str, list[str | None]]]:
    """Per-sample answers and request errors of every condition: a sample a condition
    left unchanged (or whose control was not asked) gets the control's (or ``fallback``'s)
    answer, since its input is the same."""
    answers: dict[str, list[str | None]] = {"control": []}
    errors: dict[str, list[str | None]] = {"control": []}
    fresh = zip(regenerated.answers["control"], regenerated.errors["control"])
    for i, asked in enumerate(asked_control):
        answer, error = next(fresh) if asked else (fallback[i] if fallback else None, None)
        answers["control"].append(answer)
        errors["control"].append(error)
    for name, flags in changed.items():
        fresh = zip(regenerated.answers[name], regenerated.errors[name])
        answers[name], errors[name] = [], []
        for i, c in enumerate(flags):
            answer, error = next(fresh) if c else (answers["control"][i], None)
            answers[name].append(answer)
            errors[name].append(error)
    return answers, errors


def _cohen_kappa(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' yes/no verdicts; None when chance agreement is 1."""
    if not pairs:
        return None
    observed = sum(a == b for a, b in pairs) / len(pairs)
    p_a = sum(a for a, _ in pairs) / len(pairs)
    p_b = sum(b for _, b in pairs) / len(pairs)
    chance = p_a * p_b + (1 - p_a) * (1 - p_b)
    return None if chance == 1 else (observed - chance) / (1 - chance)


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
    report: FaithfulnessReport,
    failed: Mapping[str, list[int]],
    errors: Mapping[str, Sequence[str | None]],
    mode: AnswerMode,
) -> list[str]:
    """A reply without an answer counts as wrong: a failing regeneration would pass for an
    effect of the intervention. Requests the endpoint refused are said apart."""
    out = []

    def ids(indices: Sequence[int]) -> str:
        names = [
            str(report.samples[i]["id"] if report.samples[i]["id"] is not None else i)
            for i in indices
        ]
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    for name, indices in failed.items():
        refused = [i for i in indices if errors[name][i] is not None]
        no_answer = [i for i in indices if errors[name][i] is None]
        if no_answer:
            hint = (
                " The answer was asked in a fresh turn: a model that thinks before answering "
                "needs a larger max_new_tokens."
                if mode == "fresh_turn" and not name.endswith(CONTINUATION)
                else ""
            )
            out.append(
                f"regeneration failed under {name} for {len(no_answer)} of {report.n_valid} "
                f"samples (no answer in the reply; counted as wrong): {ids(no_answer)}.{hint}"
            )
        if refused:
            first = errors[name][refused[0]]
            out.append(
                f"the endpoint refused {len(refused)} requests under {name} (counted as "
                f"wrong): {ids(refused)}; first error: {first}"
            )
    return out


def _reply_warnings(regenerated: Sequence[_Regenerated]) -> list[str]:
    """Replies that say the answer mode does not fit the model: prefilled replies that
    read as a new turn, continuations that call the tool again."""
    out = []
    answer_only = regenerated[0]
    n_new, n = len(answer_only.new_turn), answer_only.n_prefilled
    if n_new and n_new >= max(1, math.ceil(0.1 * n)):
        example = answer_only.new_turn[0].strip().replace("\n", " ")[:80]
        out.append(
            f"{n_new} of {n} replies to a prefilled '<answer>' look like a new turn (they "
            f"open <think>/<answer>/<tool_call> or run to several lines or sentences, e.g. "
            f"{example!r}): the model did not continue the assistant turn, so the answer "
            "read from them may be its whole prose reply. With an endpoint, pass "
            "--continue-final-message if the server can continue a turn (vLLM, SGLang), or "
            "leave prefill_answer unset (--no-prefill-answer) so the answer is asked for "
            "in a fresh turn."
        )
    for extra in regenerated[1:]:
        for name, count in extra.tool_calls.items():
            out.append(
                f"{count} regenerated continuations under {name} called the zoom-in tool "
                "again instead of answering (not run; counted as no answer)."
            )
    return out


def _agreement_warnings(agreement: Mapping[str, Any]) -> list[str]:
    """A judge that disagrees with the labels makes reliability and sufficiency moot."""
    score = agreement.get("agreement")
    if agreement["n"] == 0:
        return ["judge validation: no valid trace has a reference or a judge_label."]
    if score is None:
        return [f"judge validation: none of the judge's {agreement['n']} verdicts was readable."]
    kappa = agreement.get("cohen_kappa")
    if score["mean"] < 0.8 or (kappa is not None and kappa < 0.6):
        shown = "n/a" if kappa is None else f"{kappa:.2f}"
        return [
            f"the judge agrees with {agreement['labels']} on only {score['mean']:.0%} of "
            f"{score['n']} answers (Cohen's kappa {shown}): read its reliability and "
            "sufficiency scores with care."
        ]
    return []
