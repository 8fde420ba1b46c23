"""``FaithfulnessReport``: the result of a faithfulness measurement, as JSON, markdown, or
per-sample columns for the ``mcot_faithfulness`` metric.

A report says what it rests on: how many traces each intervention changed (its effect is
estimated over those only), the interval method, warnings that make the numbers
unreadable (accuracy at floor or ceiling, failed regenerations) and its provenance
(model, judge, data file and hash, settings, package version), so a figure can be traced
back and a reader is not left to guess why every effect is 0."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_faithful.faithfulness.stats import INTERVAL_METHOD, Effect, MeanScore

__all__ = ["FaithfulnessReport", "data_provenance"]

_MODES = {
    "prefill": "prefilled <answer> continued",
    "continue": "assistant turn continued",
    "fresh_turn": "asked in a fresh user turn",
}


def data_provenance(path: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Path, size and sha256 of a data file, so a report names exactly what it measured
    (images referenced by path are not hashed); ``extra`` adds fields (``limit``, ...)."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size, **extra}


@dataclass
class FaithfulnessReport:
    """Result of :meth:`FaithfulnessEvaluator.evaluate`; ``save`` writes JSON + markdown.

    ``n_intervened``: per intervention, the valid traces it changed (the pairs of its
    effect); ``warnings``: what makes the figures unreadable; ``provenance``: what produced
    them; ``n_refused_calls``: tool calls the tool refused in the valid traces (kept: the
    model saw the error and went on); ``answer_mode``: how answers were regenerated;
    ``ate_v_continuation``: ATE_V with the post-crop reasoning regenerated too (``ate_v``
    holds it fixed); ``judge_agreement``: the judge's agreement with exact match or given
    labels (``validate_judge``).
    """

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
    n_intervened: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    n_refused_calls: int = 0
    answer_mode: str | None = None
    ate_v_continuation: Effect | None = None
    judge_agreement: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return {
            "warnings": self.warnings,
            "n_traces": self.n_traces,
            "n_valid": self.n_valid,
            "n_intervened": self.n_intervened,
            "n_refused_calls": self.n_refused_calls,
            "answer_mode": self.answer_mode,
            "interval_method": INTERVAL_METHOD,
            "accuracy": plain(self.accuracy),
            "control_accuracy": plain(self.control_accuracy),
            "ate_t": plain(self.ate_t),
            "ate_v": plain(self.ate_v),
            "ate_v_continuation": plain(self.ate_v_continuation),
            "effects": {name: e.to_dict() for name, e in self.effects.items()},
            "reliability": plain(self.reliability),
            "sufficiency": plain(self.sufficiency),
            "judge_agreement": self.judge_agreement,
            "invalid": self.invalid,
            "samples": self.samples,
            "config": self.config,
            "provenance": self.provenance,
        }

    def columns(self) -> dict[str, list]:
        """Per-sample columns for ``compute_faithfulness`` / the ``mcot_faithfulness`` metric
        (predictions are the baseline's answers; missing answers become "").

        A sample an intervention left unchanged carries the control's answer in that
        column; the metric has no column saying so and counts it as an unchanged pair, so
        its ATE equals this report's only when every sample was intervened on
        (``n_intervened``)."""
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

        lines = ["# Faithfulness of visual thinking", ""]
        for warning in self.warnings:  # one quote each, so they do not run together
            lines += [f"> **WARNING:** {warning}", ""]
        intervened = ", ".join(f"{name} {n}" for name, n in self.n_intervened.items())
        refused = self.n_refused_calls
        lines += [
            f"{self.n_valid} valid traces of {self.n_traces}"
            + (
                f" ({refused} refused tool call{'s' if refused != 1 else ''} in them, kept: "
                "the model saw the tool's error and went on)"
                if refused
                else ""
            )
            + (f"; traces each intervention changed: {intervened}" if intervened else "")
            + f"; baseline of the effects: {self.config.get('baseline')}"
            + (
                f"; answers regenerated: {_MODES.get(self.answer_mode, self.answer_mode)}"
                if self.answer_mode
                else ""
            )
            + ".",
            "",
            f"| condition | accuracy | ATE | {level} CI | McNemar p | lost | gained | "
            "traces (intervened of valid) | baseline accuracy on them |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if self.accuracy is not None:
            lines.append(
                f"| original answers | {fmt(self.accuracy.mean)} | | | | | | {self.n_valid} | |"
            )
        if self.control_accuracy is not None:
            lines.append(
                f"| control (regenerated) | {fmt(self.control_accuracy.mean)} | | | | | | "
                f"{self.n_valid} | |"
            )
        both = self.ate_v_continuation is not None
        for name, e in self.effects.items():
            tag = ""
            if e is self.ate_t:
                tag = " (ATE_T)"
            elif e is self.ate_v:
                tag = " (ATE_V, answer only)" if both else " (ATE_V)"
            elif e is self.ate_v_continuation:
                tag = " (ATE_V, regenerated continuation)"
            lines.append(
                f"| do({name}){tag} | {fmt(e.intervened_accuracy)} | {e.ate:+.3f} | "
                f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}] | {e.p_value:.3g} | {e.n_lost} | "
                f"{e.n_gained} | {e.n} of {e.n + e.n_unchanged} | "
                f"{fmt(e.baseline_accuracy)} |"
            )
        if self.effects:
            lines += [
                "",
                f"Intervals: {INTERVAL_METHOD}; p-values: exact McNemar test. Each effect is "
                "estimated over the traces its intervention changed (accuracies of a do() "
                "row and its baseline are over those traces).",
            ]
            if both:
                lines += [
                    "",
                    "ATE_V (answer only) regenerates the answer after the reasoning the model "
                    "wrote on seeing the real crop, held fixed; ATE_V (regenerated "
                    "continuation) regenerates that reasoning too, from the tool's response "
                    "on, against a control regenerated the same way (rows ending in "
                    "'(continuation)').",
                ]
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
        agreement = self.judge_agreement
        if agreement:
            if not judged:
                lines += [
                    "",
                    f"| judge metric | mean | {level} CI | scored | unscored |",
                    "|---|---|---|---|---|",
                ]
            score = agreement.get("agreement")
            ci = "n/a" if not score else f"[{score['ci_low']:.3f}, {score['ci_high']:.3f}]"
            lines.append(
                f"| judge agreement with {agreement['labels']} (validation) | "
                f"{fmt(score['mean'] if score else None)} | {ci} | "
                f"{agreement['n'] - agreement['n_unscored']} | {agreement['n_unscored']} |"
            )
            kappa = agreement.get("cohen_kappa")
            lines += [
                "",
                "Judge validation: the judge said whether each sampled answer is right; "
                f"agreement with {agreement['labels']}, Cohen's kappa {fmt(kappa, 2)}.",
            ]
        if self.invalid:
            lines += ["", f"## Invalid traces ({len(self.invalid)}, left out)", ""]
            for bad in self.invalid:
                where = bad.get("source") or bad.get("id")
                lines.append(f"- `{where}`: " + "; ".join(bad["errors"]))
        if self.provenance:
            lines += ["", "## Provenance", ""] + _provenance_lines(self.provenance)
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


def _provenance_lines(provenance: dict[str, Any]) -> list[str]:
    def show(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, dict):
            return ", ".join(f"{k}: `{v}`" for k, v in value.items() if v is not None)
        return f"`{value}`"

    lines = []
    for key, value in provenance.items():
        if key == "settings":
            continue
        lines.append(f"- {key}: {show(value)}")
    if "settings" in provenance:
        lines.append(f"- settings: `{json.dumps(provenance['settings'], sort_keys=True)}`")
    return lines
