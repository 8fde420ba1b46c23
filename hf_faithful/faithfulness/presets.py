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
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.mcot.zoom import BoxRules

__all__ = ["DEEPEYES_USER_SUFFIX", "PRESETS", "preset_config", "preset_fields"]

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
