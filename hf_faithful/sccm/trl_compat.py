"""The TRL internals ``SCCMRewardTrainer`` stands on, and the versions they were checked on.

``SCCMRewardTrainer`` overrides private ``GRPOTrainer`` methods (``_tool_call_loop``,
``_tokenize_prompts``) and reads private attributes. TRL may change them in any release,
and a silent change would break training in ways no type check catches (crops rewarded
that the model never saw, images split wrongly). So each internal is recorded here with
its signature and, where we depend on its body, a hash of its source as of the tested TRL
release; ``tests/test_sccm_trl_compat.py`` fails loudly, naming what to re-check, when
either moves. pyproject pins ``trl`` to the tested range.

To move to a new TRL: install it, run ``pytest tests/test_sccm_trl_compat.py``, re-check
each reported internal against ``what`` below (and run ``tests/test_sccm_trainer.py``),
then update ``TESTED_TRL_VERSION`` and the recorded values (:func:`current_fingerprints`
prints them) and the pin in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TESTED_TRL_VERSION",
    "TESTED_VERSIONS",
    "TRL_INTERNALS",
    "TrlInternal",
    "current_fingerprints",
    "trl_internals_report",
]

TESTED_TRL_VERSION = "1.16.0"
# The one transformers internal recorded below was checked on this release.
TESTED_VERSIONS = {"trl": TESTED_TRL_VERSION, "transformers": "5.24.0"}


@dataclass(frozen=True)
class TrlInternal:
    """One internal we rely on: where it is, what it looked like, what depends on it."""

    path: str  # "module:Attr.attr", resolved by attribute access (inherited ones included)
    signature: str | None  # parameter names, kinds and defaults (see _signature); None: not checked
    source_sha256: str | None  # first 16 hex digits of the dedented source; None: not hashed
    what: str  # what to re-check in hf_faithful.sccm when it changes


TRL_INTERNALS: tuple[TrlInternal, ...] = (
    TrlInternal(
        "trl:GRPOTrainer._tool_call_loop",
        "(self, prompts, prompt_ids, completion_ids, completions, logprobs, images, multimodal_fields)",
        "45b10ad512c52cea",
        "SCCMRewardTrainer._tool_call_loop reads result[1] as the completions (one message "
        "list per rollout, tool responses as 'tool' messages holding the crop images) and "
        "self.environments in rollout order; forget_unseen_crops relies on TRL dropping a tool "
        "response that overflows max_completion_length AFTER the tool ran.",
    ),
    TrlInternal(
        "trl:GRPOTrainer._tokenize_prompts",
        "(self, prompts)",
        "1056d2a0a7b475a0",
        "SCCMRewardTrainer._tokenize_prompts unpacks (prompt_ids, images, multimodal_fields) and "
        "stacks pixel_values / image_grid_thw lists back into tensors (a TRL 1.16 workaround: "
        "check whether it is still needed).",
    ),
    TrlInternal(
        "trl:GRPOTrainer._generate",
        "(self, prompts)",
        "bea6bc4f3207f396",
        "_generate must still call self._tokenize_prompts and self._tool_call_loop (with the "
        "7-tuple return) so that both SCCM overrides run.",
    ),
    TrlInternal(
        "trl:GRPOTrainer._calculate_rewards",
        "(self, inputs, prompts, completions, completion_ids_list)",
        "5017fb893c0ca9dd",
        "the SCCM rewards read the environments= and log_metric= keywords TRL passes to "
        "reward functions, and None rewards must still be ignored (nan) per function.",
    ),
    TrlInternal(
        "trl:GRPOTrainer._save_checkpoint",
        "(self, model, trial)",
        "10fa449292ba1d3d",
        "checkpoints get the SCCM card because _save_checkpoint calls "
        "self.create_model_card(model_name=...).",
    ),
    TrlInternal(
        "trl:GRPOTrainer.create_model_card",
        "(self, model_name=None, dataset_name=None, tags=None)",
        None,
        "SCCMRewardTrainer.create_model_card replaces it with the same keywords (push_to_hub "
        "forwards its kwargs there).",
    ),
    TrlInternal(
        "trl:GRPOTrainer.__init__",
        "(self, model, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None, "
        "processing_class=None, reward_processing_classes=None, callbacks=None, "
        "optimizers=(None, None), quantization_config=None, peft_config=None, tools=None, "
        "rollout_func=None, environment_factory=None)",
        None,
        "SCCMRewardTrainer.__init__ forwards these keywords and reads self._environment_pool, "
        "self.environments, self._dist, self.reward_func_names and self.reward_weights.",
    ),
    TrlInternal(
        "trl.distributed:DistributedBackend.summon_full_params",
        "(self, module, **kwargs)",
        None,
        "SCCMRewardTrainer._answer_sufficiency_queries enters it (recurse=False) around the "
        "policy's sufficiency generation, as TRL's own generation does.",
    ),
    TrlInternal(
        "trl.models:unwrap_model_for_generation",
        "(model, accelerator, gather_deepspeed3_params=True, generation_kwargs=None, "
        "gradient_checkpointing_kwargs=None)",
        None,
        "SCCMRewardTrainer._answer_sufficiency_queries passes gather_deepspeed3_params and "
        "gradient_checkpointing_kwargs (ZeRO-3 safety of the policy answerer).",
    ),
    TrlInternal(
        "trl.chat_template_utils:supports_tool_calling",
        None,
        None,
        "SCCMRewardTrainer._use_tool_template decides whether to swap the chat template.",
    ),
    TrlInternal(
        "trl.chat_template_utils:qwen3_vl_chat_template",
        None,
        None,
        "the Qwen-VL tool-calling template swapped in for Qwen2.5-VL's stock one.",
    ),
    TrlInternal(
        "trl.chat_template_utils:qwen2_5_vl_chat_template",
        None,
        None,
        "recognizes Qwen2.5-VL's stock template (which cannot render tool calls).",
    ),
    TrlInternal(
        "transformers:Trainer.save_model",
        "(self, output_dir=None, _internal_call=False)",
        None,
        "SCCMRewardTrainer.save_model overrides it to write the SCCM card next to the weights.",
    ),
)


def _resolve(path: str) -> Any:
    module_name, _, attrs = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


def _signature(obj: Any) -> str:
    """Names, kinds and defaults of the parameters, without annotations: those are what
    calls depend on, and annotation reprs vary with Python and typing versions."""
    signature = inspect.signature(obj)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _sha(obj: Any) -> str:
    source = textwrap.dedent(inspect.getsource(obj))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def current_fingerprints() -> dict[str, dict[str, str | None]]:
    """Signature and source hash of every recorded internal in the installed TRL (what to
    paste into ``TRL_INTERNALS`` after re-checking a new release)."""
    out: dict[str, dict[str, str | None]] = {}
    for internal in TRL_INTERNALS:
        try:
            obj = _resolve(internal.path)
        except (ImportError, AttributeError):
            out[internal.path] = {"signature": None, "source_sha256": None}
            continue
        out[internal.path] = {
            "signature": _signature(obj) if callable(obj) else None,
            "source_sha256": _sha(obj) if callable(obj) else None,
        }
    return out


def trl_internals_report() -> list[str]:
    """One line per recorded internal that is missing or changed in the installed TRL,
    saying what changed and what to re-check; empty when everything matches."""
    from importlib.metadata import version

    problems = []
    for internal in TRL_INTERNALS:
        package = internal.path.split(":")[0].split(".")[0]
        where = (
            f"{internal.path} (tested on {package}=={TESTED_VERSIONS[package]}, "
            f"installed {package}=={version(package)})"
        )
        try:
            obj = _resolve(internal.path)
        except (ImportError, AttributeError) as err:
            problems.append(f"{where} is gone ({err}). Re-check: {internal.what}")
            continue
        if internal.signature is not None:
            signature = _signature(obj)
            if signature != internal.signature:
                problems.append(
                    f"{where} changed signature: {signature} (was {internal.signature}). "
                    f"Re-check: {internal.what}"
                )
                continue
        if internal.source_sha256 is not None and _sha(obj) != internal.source_sha256:
            problems.append(
                f"{where} changed its source (sha256 {_sha(obj)}, was {internal.source_sha256}). "
                f"Re-check: {internal.what}"
            )
    return problems
