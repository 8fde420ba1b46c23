"""FaithfulnessEvaluator: the whole measurement of arXiv 2510.23482, section "faithfulness".

1. Traces: read ready ones, or generate them with the model and the zoom-in tool.
2. Interventions: ``do(T)`` (corrupted reasoning) and ``do(V)`` (replaced crops); the
   model under test regenerates the answer from each intervened prefix, plus once from
   the untouched prefix (the *control*), all in one batched pass.
3. Effects: accuracy per condition, ``ATE_T`` and ``ATE_V`` with paired bootstrap
   intervals, exact McNemar p-values and the flipped samples, from
   :func:`~hf_faithful.faithfulness.stats.intervention_effects` (the same core as the
   ``mcot_faithfulness`` metric).
4. Judge: reliability and sufficiency of the crops.

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

__all__ = ["FaithfulnessEvaluator"]


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

    def _regenerate(self, conditions: Mapping[str, Sequence[Trace]]) -> dict[str, list[str]]:
        """Answers of the model from each condition's prefixes, in one batched call."""
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
        out: dict[str, list[str]] = {name: [] for name in conditions}
        for name, reply in zip(names, replies):
            out[name].append(answer_from_reply(reply, prefilled=cfg.prefill_answer) or "")
        return out

    def evaluate(self, traces: Sequence[Trace]) -> FaithfulnessReport:
        """Measure ATE_T, ATE_V (with intervals), accuracy and the judge metrics."""
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
        """Regenerate the answers under every condition; fill in the effects."""
        cfg = self.config
        answers = self._regenerate(self._conditions(valid))
        flags = {name: match_answers(a, references, cfg.match) for name, a in answers.items()}
        for i, sample in enumerate(report.samples):
            for name in answers:
                sample["answers"][name] = answers[name][i]
                sample["correct"][name] = flags[name][i]
        control = flags.pop("control")
        report.control_accuracy = mean_score([float(c) for c in control], **stats)
        base = control if cfg.baseline == "control" else original
        result = intervention_effects(base, flags, **stats)
        report.effects, report.ate_t, report.ate_v = result.effects, result.ate_t, result.ate_v

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
