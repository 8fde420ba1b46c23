"""Presets: a model's own prompt format and tool rules, so it is measured as it was trained.

A model answers differently under a system prompt, user wording, tool-response wording,
turn length or crop handling other than its training's, and the trace (hence every ATE)
is then not the model's usual behaviour. ``PRESETS[name]`` holds FaithfulnessConfig
fields, ``box_rules`` as BoxRules fields; ``hf-faithful faithfulness --preset NAME`` uses
them as defaults (options given on the command line win).

``deepeyes`` is copied from the public DeepEyes repository (Visual-Agent/DeepEyes, commit
6c5e79671dbff958a6f9d44848ba2ca87854f0b0):

* system prompt with the ``<tools>`` block: ``instruction_prompt_system`` of
  ``eval/eval_vstar.py`` (shipped as ``prompts/deepeyes_system.txt``);
* user suffix: ``USER_PROMPT_V2`` of ``eval/eval_vstar.py``, appended to the question and
  repeated inside every tool response (``<tool_response>`` crop suffix
  ``</tool_response>``), as ``eval/eval_vstar.py`` builds its turns;
* ``max_tokens=10240`` per turn (``eval/eval_vstar.py``);
* crops resized with ``smart_resize`` (``eval/eval_vstar.py``) and tiny boxes enlarged to
  28 px about their centre instead of refused, aspect ratio at most 100
  (``maybe_resize_bbox`` of ``verl/workers/agent/envs/mm_process_engine/visual_toolbox_v5.py``);
  a refused call is answered ``Error: ...`` (``execute`` there).

Left as this package does it: one tool call per turn (generation stops at
``</tool_call>``; DeepEyes v5 runs up to 3 per turn), ``max_tool_calls`` (DeepEyes'
evaluation allows up to 10 turns), Qwen2.5-VL absolute coordinates (``coords``).

:func:`model_fields` holds what a model needs whatever else is asked (the bundled
reference VLM's box frame and judge metrics; the CLI and the inspector Space both apply
it); :func:`suggested_settings` guesses a UI's defaults from a model's name or folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.mcot.zoom import BoxRules

__all__ = [
    "DEEPEYES_USER_SUFFIX",
    "PRESETS",
    "REFERENCE_MODEL",
    "model_fields",
    "preset_config",
    "preset_fields",
    "suggested_settings",
]

# The bundled reference VLM's name in build_backend, the CLI (--model) and the Space.
REFERENCE_MODEL = "reference"
# model_type of configs whose boxes are in Qwen3-VL's 0..1000 frame
_NORMALIZED_1000_TYPES = ("qwen3_vl", "qwen3_vl_moe")

# USER_PROMPT_V2 of DeepEyes' eval/eval_vstar.py, verbatim (leading newline, double spaces
# and trailing space included).
DEEPEYES_USER_SUFFIX = (
    "\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly as:  "
    "<think>...</think>  <tool_call>...</tool_call> (if tools needed)  <answer>...</answer> "
)

PRESETS: dict[str, dict[str, Any]] = {
    "deepeyes": {
        "system_prompt": "deepeyes",
        "user_template": "{question}" + DEEPEYES_USER_SUFFIX,
        "tool_response": "<tool_response>{image}" + DEEPEYES_USER_SUFFIX + "</tool_response>",
        "tool_error": "Error: {error}",
        "max_turn_tokens": 10240,
        "box_rules": {
            "coords": "absolute",
            "min_side": 0,
            "enlarge_below": 28,
            "max_aspect_ratio": 100.0,
            "clamp": True,
            "crop_resize": "smart_resize",
        },
    },
}


def preset_config(name: str, **overrides: Any) -> FaithfulnessConfig:
    """The FaithfulnessConfig of preset ``name``; ``overrides`` (config fields, and
    ``box_rules`` as a BoxRules or a dict of its fields) win over the preset."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    values = {k: v for k, v in PRESETS[name].items() if k != "box_rules"} | overrides
    rules = overrides.get("box_rules", {})
    if not isinstance(rules, BoxRules):
        rules = BoxRules(**(PRESETS[name].get("box_rules", {}) | dict(rules)))
    values["box_rules"] = rules
    return FaithfulnessConfig(**values)


def preset_fields(name: str) -> dict[str, Any]:
    """Preset ``name`` flattened to option names (config and BoxRules fields together),
    as the CLI applies it."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    flat = {k: v for k, v in PRESETS[name].items() if k != "box_rules"}
    flat |= PRESETS[name].get("box_rules", {})
    names = {f.name for f in dataclasses.fields(FaithfulnessConfig)}
    names |= {f.name for f in dataclasses.fields(BoxRules)}
    unknown = set(flat) - names
    if unknown:  # a preset naming a field that no longer exists would silently do nothing
        raise ValueError(f"preset {name!r} sets unknown fields {sorted(unknown)}")
    return flat


def model_fields(model: str | None, endpoint: str | None = None) -> dict[str, Any]:
    """Fields a model needs whatever else is asked, flattened as :func:`preset_fields`:
    the bundled reference VLM (``"reference"``, not behind an endpoint) boxes in
    Qwen3-VL's 0..1000 frame (``coords``) and is asked only sufficiency as a judge
    (``judge_metrics``: it was never taught the reliability prompt). Empty for any other
    model. The ``faithfulness`` CLI and the inspector Space both apply it: ``coords`` is
    the frame the model writes, so it wins over any option; ``judge_metrics`` is a default.
    """
    if endpoint is None and model == REFERENCE_MODEL:
        return {"coords": "normalized_1000", "judge_metrics": ("sufficiency",)}
    return {}


def _model_type(model: str) -> str | None:
    """``model_type`` of a local folder's ``config.json`` (None when there is none)."""
    try:
        config = json.loads((Path(model).expanduser() / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def suggested_settings(model: str | None, endpoint: str | None = None) -> dict[str, Any]:
    """Defaults a model's name (Hub id, folder or served name) suggests, for a UI to show
    and the user to change: ``preset`` (a :data:`PRESETS` name or None), ``coords``
    (BoxRules' frame) and ``judge_metrics``.

    :func:`model_fields` first (the reference VLM); a name containing ``deepeyes`` (e.g.
    ``ChenShawn/DeepEyes-7B``) gets the ``deepeyes`` preset and its absolute pixels; a
    Qwen3-VL (``model_type`` of a local folder's ``config.json``, or ``qwen3-vl`` in the
    name) boxes in 0..1000; anything else in absolute pixels (BoxRules' default, as
    Qwen2.5-VL). The ``faithfulness`` CLI does not guess: it takes ``--preset``."""
    name = (model or "").strip()
    lowered = name.lower().replace("_", "-")
    preset = "deepeyes" if "deepeyes" in lowered else None
    coords = BoxRules().coords
    if preset is not None:
        coords = PRESETS[preset].get("box_rules", {}).get("coords", coords)
    elif endpoint is None and _model_type(name) in _NORMALIZED_1000_TYPES:
        coords = "normalized_1000"
    elif "qwen3-vl" in lowered:
        coords = "normalized_1000"
    fixed = model_fields(name, endpoint)
    judge_metrics = FaithfulnessConfig.__dataclass_fields__["judge_metrics"].default
    return {
        "preset": preset,
        "coords": fixed.get("coords", coords),
        "judge_metrics": tuple(fixed.get("judge_metrics", judge_metrics)),
    }
