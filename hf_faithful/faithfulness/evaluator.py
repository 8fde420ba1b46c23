"""FaithfulnessEvaluator: the whole measurement of arXiv 2510.23482, section "faithfulness".

1. Traces: read ready ones, or generate them with the model and the zoom-in tool.
2. Interventions: ``do(T)`` (corrupted reasoning) and ``do(V)`` (replaced crops); the
   model under test regenerates the answer from each intervened prefix, plus once from
   the untouched prefix (the *control*), all in one batched pass.
3. Effects: accuracy per condition, ``ATE_T`` and ``ATE_V`` with paired bootstrap
   intervals, exact McNemar p-values and the flipped samples.
4. Judge: reliability and sufficiency of the crops.

The baseline of the ATEs is the control by default: the answer regenerated with the same
prompt and decoding, so the effect is the intervention's alone and not a difference
between the original generation and the regeneration procedure (``baseline="original"``
uses the traces' own answers, as the paper's definition reads). Invalid traces are left
out and listed with their errors; a sample without reference is scored against the
trace's own answer (the ATE then measures how often the answer changes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from tqdm.auto import tqdm

from hf_faithful.faithfulness.backends import AnswerBackend
from hf_faithful.faithfulness.interventions import (
    TEXT_CORRUPTIONS,
    VISUAL_INTERVENTIONS,
    intervene_text,
    intervene_visual,
)
from hf_faithful.faithfulness.judge import FaithfulnessJudge, reply_answer
from hf_faithful.faithfulness.prompts import load_prompt
from hf_faithful.faithfulness.stats import Effect, MeanScore, mean_score, paired_effect
from hf_faithful.mcot.answers import AnswerMatcher, MatchMode, answers_match, extract_answer
from hf_faithful.mcot.trace import Trace, load_image, parse_deepeyes, parse_tool_call
from hf_faithful.mcot.zoom import BoxRules, InvalidBoxError, zoom_in

__all__ = ["FaithfulnessConfig", "FaithfulnessEvaluator", "FaithfulnessReport", "load_questions"]

_DEFAULT = "default"


@dataclass
class FaithfulnessConfig:
    """Settings of a faithfulness measurement.

    Args:
        visual_interventions: ``do(V)`` kinds (see ``VISUAL_INTERVENTIONS``); the first
            one is reported as ``ATE_V`` (default: Gaussian noise, as in the paper).
        text_corruptions: offline corruptions for ``do(T)`` when no rewriter is given;
            empty to skip ``do(T)``.
        match: ``"exact"``, ``"choice"`` or a callable ``(prediction, reference) -> bool``.
        baseline: ``"control"`` (answer regenerated from the untouched prefix) or
            ``"original"`` (the trace's own answer).
        prefill_answer: open ``<answer>`` after the prefix so the model answers at once
            (local models and endpoints that continue an assistant turn, e.g. vLLM with
            ``OpenAIChatBackend(continue_final_message=True)``; turn it off for APIs that
            always start a new reply).
        system_prompt: for generating and regenerating; ``"default"`` is the shipped
            ``zoom_system`` prompt, None for no system turn.
        user_template: the user turn, with ``{question}``.
        max_new_tokens: tokens of a regenerated answer.
        max_turn_tokens: tokens per assistant turn when generating traces.
        max_tool_calls: zoom-in calls allowed per trace (more makes it invalid).
        box_rules: coordinates and validation of boxes (Qwen3-VL: ``normalized_1000``).
        judge_metrics: which judge metrics to compute when a judge is given.
        n_resamples / confidence / seed: bootstrap settings; every random choice is seeded.
    """

    visual_interventions: tuple[str, ...] = ("noise_gaussian",)
    text_corruptions: tuple[str, ...] = TEXT_CORRUPTIONS
    match: MatchMode | AnswerMatcher = "exact"
    baseline: Literal["control", "original"] = "control"
    prefill_answer: bool = True
    system_prompt: str | None = _DEFAULT
    user_template: str = "{question}"
    max_new_tokens: int = 32
    max_turn_tokens: int = 256
    max_tool_calls: int = 4
    box_rules: BoxRules = field(default_factory=BoxRules)
    judge_metrics: tuple[str, ...] = ("reliability", "sufficiency")
    n_resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        self.visual_interventions = tuple(self.visual_interventions)
        self.text_corruptions = tuple(self.text_corruptions)
        self.judge_metrics = tuple(self.judge_metrics)
        for kind in self.visual_interventions:
            if kind not in VISUAL_INTERVENTIONS:
                raise ValueError(
                    f"visual_interventions: {kind!r} is not one of {VISUAL_INTERVENTIONS}"
                )
        for kind in self.text_corruptions:
            if kind not in TEXT_CORRUPTIONS:
                raise ValueError(f"text_corruptions: {kind!r} is not one of {TEXT_CORRUPTIONS}")
        if self.baseline not in ("control", "original"):
            raise ValueError(f"baseline must be 'control' or 'original', got {self.baseline!r}")
        if not callable(self.match) and self.match not in ("exact", "choice"):
            raise ValueError(f"match must be 'exact', 'choice' or a callable, got {self.match!r}")
        if "{question}" not in self.user_template:
            raise ValueError("user_template must contain '{question}'")
        for name in ("max_new_tokens", "max_turn_tokens", "n_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0, got {self.max_tool_calls}")

    @property
    def resolved_system_prompt(self) -> str | None:
        return load_prompt("zoom_system") if self.system_prompt == _DEFAULT else self.system_prompt

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if callable(self.match):
            data["match"] = getattr(self.match, "__name__", repr(self.match))
        return data


@dataclass
class FaithfulnessReport:
    """Result of :meth:`FaithfulnessEvaluator.evaluate`; ``save`` writes JSON + markdown."""

    n_traces: int
    n_valid: int
    invalid: list[dict[str, Any]]
    accuracy: MeanScore | None
    control_accuracy: MeanScore | None
    effects: dict[str, Effect]
    ate_t: Effect | None
    ate_v: Effect | None
    reliability: MeanScore | None
    sufficiency: MeanScore | None
    samples: list[dict[str, Any]]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return {
            "n_traces": self.n_traces,
            "n_valid": self.n_valid,
            "accuracy": plain(self.accuracy),
            "control_accuracy": plain(self.control_accuracy),
            "ate_t": plain(self.ate_t),
            "ate_v": plain(self.ate_v),
            "effects": {name: e.to_dict() for name, e in self.effects.items()},
            "reliability": plain(self.reliability),
            "sufficiency": plain(self.sufficiency),
            "invalid": self.invalid,
            "samples": self.samples,
            "config": self.config,
        }

    def columns(self) -> dict[str, list]:
        """Per-sample columns for ``compute_faithfulness`` / the ``mcot_faithfulness`` metric
        (predictions are the baseline's answers; missing answers become "")."""
        baseline = self.config.get("baseline", "control")
        use_control = baseline == "control" and bool(self.effects)
        out: dict[str, list] = {
            "predictions": [
                (s["answers"]["control"] if use_control else s["answer"]) or ""
                for s in self.samples
            ],
            "references": [
                s["reference"] if s["reference"] is not None else s["answer"] for s in self.samples
            ],
        }
        for key, effect in (
            ("textual_predictions", self.ate_t),
            ("visual_predictions", self.ate_v),
        ):
            if effect is not None:
                out[key] = [s["answers"][effect.name] or "" for s in self.samples]
        for key, score in (("reliability", self.reliability), ("sufficiency", self.sufficiency)):
            if score is not None:
                out[key] = [s.get(key) for s in self.samples]
        return out

    def to_markdown(self) -> str:
        level = f"{self.config.get('confidence', 0.95):.0%}"

        def fmt(x: float | None, digits: int = 3) -> str:
            return "n/a" if x is None else f"{x:.{digits}f}"

        lines = [
            "# Faithfulness of visual thinking",
            "",
            f"{self.n_valid} valid traces of {self.n_traces}; "
            f"baseline of the effects: {self.config.get('baseline')}.",
            "",
            f"| condition | accuracy | ATE | {level} CI | McNemar p | lost | gained |",
            "|---|---|---|---|---|---|---|",
        ]
        if self.accuracy is not None:
            lines.append(f"| original answers | {fmt(self.accuracy.mean)} | | | | | |")
        if self.control_accuracy is not None:
            lines.append(f"| control (regenerated) | {fmt(self.control_accuracy.mean)} | | | | | |")
        for name, e in self.effects.items():
            tag = " (ATE_T)" if e is self.ate_t else " (ATE_V)" if e is self.ate_v else ""
            lines.append(
                f"| do({name}){tag} | {fmt(e.intervened_accuracy)} | {e.ate:+.3f} | "
                f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}] | {e.p_value:.3g} | {e.n_lost} | "
                f"{e.n_gained} |"
            )
        judged = [
            (n, s)
            for n, s in (("reliability", self.reliability), ("sufficiency", self.sufficiency))
            if s
        ]
        if judged:
            lines += [
                "",
                f"| judge metric | mean | {level} CI | scored | unscored |",
                "|---|---|---|---|---|",
            ]
            for name, s in judged:
                ci = "n/a" if s.mean is None else f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"
                lines.append(f"| {name} | {fmt(s.mean)} | {ci} | {s.n} | {s.n_missing} |")
        if self.invalid:
            lines += ["", f"## Invalid traces ({len(self.invalid)}, left out)", ""]
            for bad in self.invalid:
                where = bad.get("source") or bad.get("id")
                lines.append(f"- `{where}`: " + "; ".join(bad["errors"]))
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike) -> dict[str, str]:
        """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, text in (
            ("report.json", json.dumps(self.to_dict(), indent=2)),
            ("report.md", self.to_markdown()),
        ):
            path = output_dir / name
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            paths[name] = str(path)
        return paths


def load_questions(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Read ``{"id", "image", "question", "reference" | "answer"}`` records (JSONL or JSON
    list) for trace generation; images are loaded, paths relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"questions file not found: {path}")
    base = Path(image_root) if image_root else path.parent
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        records = json.loads(text)
        where = [f"{path.name}[{i}]" for i in range(len(records))]
    else:
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        records, where = [], []
        for n, line in numbered:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path.name}:{n}: invalid JSON: {err.msg}") from None
            where.append(f"{path.name}:{n}")
    out = []
    for record, source in zip(records, where):
        if not isinstance(record, Mapping) or "question" not in record or "image" not in record:
            raise ValueError(f"{source}: a question record needs 'question' and 'image'")
        reference = record.get("reference", record.get("answer"))
        out.append(
            {
                "id": str(record.get("id", source)),
                "image": load_image(record["image"], base),
                "question": str(record["question"]),
                "reference": None if reference is None else str(reference),
                "source": source,
            }
        )
    return out


def answer_from_reply(reply: str, prefilled: bool) -> str:
    """The regenerated answer: the ``<answer>`` content, the continuation of a prefilled
    ``<answer>``, or the reply's first line."""
    if "<answer>" in reply.lower():
        return reply_answer(reply)
    if prefilled:
        return (extract_answer("<answer>" + reply) or "").strip()
    return reply_answer(reply)


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
                    content = [
                        {"type": "text", "text": "<tool_response>"},
                        {"type": "image", "image": response},
                        {"type": "text", "text": "</tool_response>"},
                    ]
                else:
                    content = [
                        {
                            "type": "text",
                            "text": f"<tool_response>Error: {response}</tool_response>",
                        }
                    ]
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
            out[name].append(answer_from_reply(reply, cfg.prefill_answer))
        return out

    def evaluate(self, traces: Sequence[Trace]) -> FaithfulnessReport:
        """Measure ATE_T, ATE_V (with intervals), accuracy and the judge metrics."""
        cfg = self.config
        valid = [t for t in traces if t.valid]
        invalid = [
            {"source": t.source, "id": t.id, "errors": list(t.errors)}
            for t in traces
            if not t.valid
        ]
        stats = {"n_resamples": cfg.n_resamples, "confidence": cfg.confidence, "seed": cfg.seed}
        references = [t.reference if t.reference is not None else t.answer for t in valid]

        def correct(answers: Sequence[str | None]) -> list[bool]:
            return [answers_match(a, r, cfg.match) for a, r in zip(answers, references)]

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
            for t, c in zip(valid, correct([t.answer for t in valid]))
        ]
        accuracy = (
            mean_score([float(s["correct"]["original"]) for s in samples], **stats)
            if valid
            else None
        )
        effects: dict[str, Effect] = {}
        ate_t = ate_v = control_accuracy = None
        if self.model is not None and valid:
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
            answers = self._regenerate(conditions)
            flags = {name: correct(a) for name, a in answers.items()}
            for i, sample in enumerate(samples):
                for name in answers:
                    sample["answers"][name] = answers[name][i]
                    sample["correct"][name] = flags[name][i]
            control_accuracy = mean_score([float(c) for c in flags["control"]], **stats)
            base = (
                flags["control"]
                if cfg.baseline == "control"
                else [s["correct"]["original"] for s in samples]
            )
            for name in conditions:
                if name == "control":
                    continue
                effects[name] = paired_effect(base, flags[name], name, **stats)
                if name.startswith("T:") and ate_t is None:
                    ate_t = effects[name]
                if name.startswith("V:") and ate_v is None:
                    ate_v = effects[name]
        reliability = sufficiency = None
        if self.judge is not None and valid and cfg.judge_metrics:
            judged = FaithfulnessJudge(self.judge, match=cfg.match).score(valid, cfg.judge_metrics)
            for i, sample in enumerate(samples):
                if judged.reliability:
                    sample["reliability"] = judged.reliability[i]
                if judged.sufficiency:
                    sample["sufficiency"] = judged.sufficiency[i]
            if judged.reliability:
                reliability = mean_score(judged.reliability, **stats)
            if judged.sufficiency:
                sufficiency = mean_score(judged.sufficiency, **stats)
        return FaithfulnessReport(
            n_traces=len(traces),
            n_valid=len(valid),
            invalid=invalid,
            accuracy=accuracy,
            control_accuracy=control_accuracy,
            effects=effects,
            ate_t=ate_t,
            ate_v=ate_v,
            reliability=reliability,
            sufficiency=sufficiency,
            samples=samples,
            config=cfg.to_dict(),
        )
