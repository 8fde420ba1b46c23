"""``SCCMRewardTrainer``: TRL's GRPOTrainer with a zoom-in tool and the SCCM rewards."""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoProcessor, ProcessorMixin
from trl import GRPOTrainer
from trl.chat_template_utils import (
    qwen2_5_vl_chat_template,
    qwen3_vl_chat_template,
    supports_tool_calling,
)
from trl.models import unwrap_model_for_generation

from hf_faithful.mcot.backends import AnswerBackend, LocalVLMBackend, build_backend
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.sccm.card import SCCM_PAPER, sccm_model_card
from hf_faithful.sccm.config import SCCMConfig
from hf_faithful.sccm.data import with_prompt_column
from hf_faithful.sccm.environment import ZoomInEnvironment, forget_unseen_crops
from hf_faithful.sccm.judge import AnswerJudge
from hf_faithful.sccm.rewards import MinimalityReward, SufficiencyReward
from hf_faithful.sccm.trl_compat import TESTED_TRL_VERSION, trl_internals_report

logger = logging.getLogger(__name__)


@functools.cache
def _warn_on_untested_trl() -> None:
    """Once per process: a TRL outside the tested release (installed despite the pin) gets
    the list of changed internals the trainer overrides, instead of silent misbehaviour."""
    import trl

    if trl.__version__ == TESTED_TRL_VERSION:
        return
    problems = trl_internals_report()
    if problems:
        logger.warning(
            "SCCMRewardTrainer was tested on trl==%s; with trl==%s these internals it relies on "
            "changed:\n- %s",
            TESTED_TRL_VERSION,
            trl.__version__,
            "\n- ".join(problems),
        )


# Stock templates that cannot render tool calls but whose model family reads TRL's
# Qwen3-VL template correctly (same special tokens and turn format).
_TOOL_TEMPLATE_FALLBACKS = {qwen2_5_vl_chat_template: qwen3_vl_chat_template}
_QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def _model_type(model: Any, trust_remote_code: bool = False) -> str | None:
    if isinstance(model, str):
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    else:
        config = model.config
    return getattr(config, "model_type", None)


def _with_model_rules(
    factory: Callable[[], ZoomInEnvironment], rules: BoxRules
) -> Callable[[], ZoomInEnvironment]:
    """``factory`` whose environments read boxes as the trained model writes them.

    An environment built without rules would otherwise read absolute pixels whatever the
    model; one that chose its own keeps them, with a warning when the coordinates differ.
    """
    warned = False

    def build() -> ZoomInEnvironment:
        nonlocal warned
        env = factory()
        if isinstance(env, ZoomInEnvironment):
            if env.has_default_rules:
                env.rules = rules
            elif env.rules.coords != rules.coords and not warned:
                warned = True
                logger.warning(
                    "environment_factory builds environments reading %s boxes, but this model "
                    "writes %s ones (SCCMConfig.box_coords): keeping the environment's rules",
                    env.rules.coords,
                    rules.coords,
                )
        return env

    return build


_RESULT_PREFIXES = ("rewards/", "sccm/", "tools/")


class SCCMRewardTrainer(GRPOTrainer):
    """GRPO on multimodal chains of thought whose crops are rewarded for being sufficient and minimal.

    A drop-in replacement for [`~trl.GRPOTrainer`] (with [`SCCMConfig`] for
    [`~trl.GRPOConfig`]) on DeepEyes-style data: rows with an image, a conversational
    ``prompt`` and a reference ``answer`` (see ``hf_faithful.sccm.data.load_deepeyes``).

    What it adds:

    - Real multi-turn rollouts with DeepEyes' ``image_zoom_in_tool`` through TRL's
      ``environment_factory`` (one [`ZoomInEnvironment`] per rollout; the crops are fed back to
      the model and re-processed for the training forward pass). Refused boxes, unknown tools
      and broken tool-call JSON never crash training: the model gets the error as the tool
      response, TRL logs ``tools/failure_frequency``, and ``sccm/failed_tool_calls_per_rollout``
      counts them per rollout (broken JSON included).
    - Two rewards after the user's own: ``sccm_sufficiency`` and ``sccm_minimality``, logged as
      ``rewards/sccm_sufficiency/mean`` etc., with ``reward_weights`` extended by
      ``args.sufficiency_weight`` and ``args.minimality_weight``. The sufficiency queries (each
      question re-asked with only that rollout's crops) are answered in batches of
      ``args.sufficiency_batch_size`` by the unwrapped policy under ``torch.no_grad()``,
      through ``trl.models.unwrap_model_for_generation`` (ZeRO-3 safe: the parameters are
      gathered once, and every rank enters the context even with no query), with train mode
      restored afterwards; or by another local model or an OpenAI-compatible endpoint
      (``args.answerer``), or by any object with ``answer(prompts, max_new_tokens)`` passed as
      ``answerer=``.
    - Chat templates: Qwen2.5-VL's stock template cannot render tool calls, so it is swapped for
      TRL's Qwen3-VL template (same tokens and turn format); Qwen3-VL's works as is. Boxes are
      read in absolute pixels for Qwen2.5-VL and in 0..1000 for Qwen3-VL (``box_coords="auto"``),
      and the tool's description shown to the model states that convention only.
    - Only crops the model saw are rewarded: when TRL drops a tool response that would overflow
      ``max_completion_length``, the crop is taken out of the rollout's record.
    - Data: rows need an image and a conversational ``prompt``; a dataset with only ``image``,
      ``question`` and ``answer`` columns gets its prompt built like ``load_deepeyes`` does.
    - Model card: ``save_model``, checkpoints and ``push_to_hub`` write the SCCM card (base model,
      data, reward weights, the last logged SCCM figures, the SCCM and GRPO citations).

    Where it runs:

    - PEFT: pass ``peft_config`` as to GRPOTrainer; the sufficiency queries use the adapted policy.
    - Multi-process: ``accelerate launch --num_processes N script.py`` (or ``torchrun
      --nproc_per_node N``, which also runs on CPU with gloo); each rank scores its own rollouts
      and TRL gathers the rewards for the group advantages. Under DeepSpeed ZeRO-3 keep
      ``ds3_gather_for_generation=True`` (the default; refused otherwise with the policy
      answerer) so the sufficiency generation runs on gathered weights.
    - vLLM: ``use_vllm=True`` with ``vllm_mode="colocate"`` or ``"server"`` (``trl vllm-serve``)
      generates the rollouts, tool turns included; the sufficiency queries still run on the
      training copy of the policy (exactly the current weights, no sync needed). To offload them,
      serve a model behind an OpenAI-compatible API and set ``answerer="openai"``.
      ``vllm_importance_sampling_correction`` applies as in GRPO.

    Args:
        model, reward_funcs, args, train_dataset, eval_dataset, processing_class,
        reward_processing_classes, callbacks, optimizers, peft_config, quantization_config,
        tools: as in [`~trl.GRPOTrainer`]; ``reward_funcs`` may be omitted (SCCM rewards only).
        environment_factory: defaults to [`ZoomInEnvironment`] with ``args.box_rules()``; a custom
            factory must build ``ZoomInEnvironment`` subclasses (the rewards read their crops),
            and those built without rules get ``args.box_rules()`` for the model.
        answer_match: ``(prediction, reference) -> bool`` overriding ``args.answer_match``; an
            [`~hf_faithful.sccm.judge.AnswerJudge`] judges each batch of sufficiency answers in
            one call (``args.answer_match="judge"`` builds one from ``args.judge_model``; either
            way it is ``trainer.judge``, to share with
            [`~hf_faithful.sccm.judge.JudgeAccuracy`]).
        answerer: an [`AnswerBackend`] overriding ``args.answerer``.
    """

    _tag_names = ["trl", "grpo", "sccm", "hf-faithful"]
    _name = "SCCM"
    _paper = SCCM_PAPER

    def __init__(
        self,
        model: Any,
        reward_funcs: Callable | list[Callable] | None = None,
        args: SCCMConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
        tools: list[Callable] | None = None,
        environment_factory: Callable[[], ZoomInEnvironment] | None = None,
        answer_match: Callable[[str, str], bool] | None = None,
        answerer: AnswerBackend | None = None,
    ):
        _warn_on_untested_trl()
        args = self._check_args(model, args, answerer)
        user_funcs = [] if reward_funcs is None else _as_list(reward_funcs)
        args = copy.copy(args)  # the caller's config stays reusable
        args.reward_weights = self._reward_weights(args, len(user_funcs))
        model_type = _model_type(model, args.trust_remote_code)
        processing_class = self._tool_processor(model, processing_class, model_type, args)
        rules = args.box_rules(model_type)
        self._box_coords = rules.coords
        if environment_factory is None:
            environment_factory = functools.partial(
                ZoomInEnvironment,
                rules=rules,
                image_column=args.image_column,
                question_column=args.question_column,
                answer_column=args.answer_column,
            )
        else:
            environment_factory = _with_model_rules(environment_factory, rules)
        train_dataset = with_prompt_column(train_dataset, args.question_column)
        eval_dataset = with_prompt_column(eval_dataset, args.question_column, name="eval_dataset")
        self._sufficiency_calls = 0
        if reward_processing_classes is not None:  # none for the two SCCM functions
            reward_processing_classes = [*_as_list(reward_processing_classes), None, None]
        self._answerer = answerer
        # A judge built from the config waits for the accelerator (a local judge goes on
        # this rank's device); until then the sufficiency reward has no matcher.
        judge_from_config = answer_match is None and args.answer_match == "judge"
        matcher = answer_match
        if matcher is None and not judge_from_config:
            matcher = args.answer_matcher()
        super().__init__(
            model=model,
            reward_funcs=user_funcs + self._sccm_rewards(args, matcher),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
            environment_factory=environment_factory,
        )
        for pool in self._environment_pool.values():
            if not isinstance(pool[0], ZoomInEnvironment):
                raise TypeError(
                    "environment_factory must build ZoomInEnvironment instances (or subclasses), "
                    f"got {type(pool[0]).__name__}"
                )
        self.judge = answer_match if isinstance(answer_match, AnswerJudge) else None
        if judge_from_config:
            self.judge = args.build_judge(device=self.accelerator.device)
            self._sufficiency_reward.match = self.judge
        if self._answerer is None and args.answerer != "policy":
            self._answerer = build_backend(
                args.answerer_model,
                args.answerer_base_url if args.answerer == "openai" else None,
                api_key=os.environ.get(args.answerer_api_key_env),
                batch_size=args.sufficiency_batch_size,
                device=self.accelerator.device,
                trust_remote_code=args.trust_remote_code,
            )

    @staticmethod
    def _check_args(model: Any, args: SCCMConfig | None, answerer: Any) -> SCCMConfig:
        """``args`` checked (a default SCCMConfig named after the model when None)."""
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            return SCCMConfig(f"{str(name).rstrip('/').split('/')[-1] or 'model'}-SCCM")
        if not isinstance(args, SCCMConfig):
            raise TypeError(
                f"args must be an SCCMConfig (a GRPOConfig subclass), got {type(args).__name__}: "
                "use SCCMConfig in place of GRPOConfig (same fields, plus the SCCM ones)"
            )
        if answerer is not None and not isinstance(answerer, AnswerBackend):
            raise TypeError(
                f"answerer must have an answer(prompts, max_new_tokens, stop) method, got {type(answerer).__name__}"
            )
        zero3 = args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3
        if (
            zero3
            and answerer is None
            and args.answerer == "policy"
            and not args.ds3_gather_for_generation
        ):
            raise ValueError(
                "answerer='policy' under DeepSpeed ZeRO-3 needs ds3_gather_for_generation=True: ranks "
                "answer different numbers of sufficiency queries, which sharded forward passes cannot do"
            )
        return args

    @staticmethod
    def _reward_weights(args: SCCMConfig, n_user_funcs: int) -> list[float]:
        """The user's weights (1.0 each by default) followed by the two SCCM weights."""
        sccm_weights = [float(args.sufficiency_weight), float(args.minimality_weight)]
        if args.reward_weights is None:
            return [1.0] * n_user_funcs + sccm_weights
        if len(args.reward_weights) == n_user_funcs:
            return list(args.reward_weights) + sccm_weights
        raise ValueError(
            f"args.reward_weights has {len(args.reward_weights)} weights for {n_user_funcs} reward "
            "functions: give one weight per function of yours (the SCCM weights are "
            "sufficiency_weight and minimality_weight)"
        )

    @classmethod
    def _tool_processor(
        cls, model: Any, processing_class: Any, model_type: str | None, args: SCCMConfig
    ) -> Any:
        """The processor (loaded when not given) with a chat template that renders tool calls."""
        if processing_class is None:
            processing_class = AutoProcessor.from_pretrained(
                model if isinstance(model, str) else model.config._name_or_path,
                padding_side="left",
                truncation_side="left",
                trust_remote_code=args.trust_remote_code,
            )
        if not isinstance(processing_class, ProcessorMixin):
            raise TypeError(
                "SCCMRewardTrainer trains vision-language models: processing_class must be a processor "
                f"(ProcessorMixin), got {type(processing_class).__name__}"
            )
        cls._use_tool_template(processing_class, model_type)
        return processing_class

    def _sccm_rewards(
        self, args: SCCMConfig, matcher: Callable[[str, str], bool] | None
    ) -> list[Callable]:
        """``sccm_sufficiency`` (answered by :meth:`_answer_sufficiency_queries`), then
        ``sccm_minimality``, which reads its verdicts."""
        self._sufficiency_reward = SufficiencyReward(
            self._answer_sufficiency_queries,
            matcher,
            prompt=args.sufficiency_prompt,
            no_reference=args.no_reference,
            no_crop_reward=args.no_crop_reward,
        )
        return [
            self._sufficiency_reward,
            MinimalityReward(
                measure=args.minimality_measure,
                requires_sufficiency=args.minimality_requires_sufficiency,
                no_crop_reward=args.no_crop_reward,
            ),
        ]

    def _tool_call_loop(self, *args: Any, **kwargs: Any) -> tuple:
        """TRL's tool loop, then each rollout's record cut to the crops the model saw.

        TRL runs the tool before it checks the length, and drops a response that would
        overflow ``max_completion_length``: such a crop is recorded but was never seen.
        The rewards cut it too; doing it here also shows user reward functions the truth.
        """
        result = super()._tool_call_loop(*args, **kwargs)
        completions = result[1]
        for env, completion in zip(self.environments or [], completions):
            if isinstance(env, ZoomInEnvironment):
                forget_unseen_crops(env, completion)
        return result

    def _tokenize_prompts(self, prompts: list):
        # TRL 1.16 merges the per-prompt image fields of environment rollouts into lists of
        # numpy rows, which its tool loop cannot split when no tool call of a turn has returned
        # an image yet (e.g. every box refused): stack them back into tensors.
        prompt_ids, images, fields = super()._tokenize_prompts(prompts)
        for key in ("pixel_values", "image_grid_thw"):
            if isinstance(fields.get(key), list):
                fields[key] = torch.as_tensor(np.stack(fields[key]))
        return prompt_ids, images, fields

    @staticmethod
    def _use_tool_template(processor: ProcessorMixin, model_type: str | None) -> None:
        """Give the processor a chat template that renders tool calls (TRL requires one)."""
        if supports_tool_calling(processor):
            return
        fallback = _TOOL_TEMPLATE_FALLBACKS.get(processor.chat_template)
        if fallback is None and model_type in _QWEN_VL_TYPES:
            fallback = qwen3_vl_chat_template
        if fallback is None:
            raise ValueError(
                f"the chat template of this {model_type or 'model'} cannot render tool calls, which the "
                "zoom-in tool needs: set processing_class.chat_template to one that can"
            )
        logger.info("chat template cannot render tool calls: using TRL's Qwen3-VL template instead")
        processor.chat_template = fallback

    def _answer_sufficiency_queries(self, queries: list[list[dict[str, Any]]]) -> list[str]:
        """Answer the sufficiency queries of this rank's rollouts (greedy, no gradients)."""
        max_new_tokens = self.args.sufficiency_max_new_tokens
        if self._answerer is not None:
            return self._answerer.answer(queries, max_new_tokens=max_new_tokens) if queries else []
        # Every rank enters the context, queries or not: under ZeRO-3 it gathers parameters
        # collectively.
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped_model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            if not queries:
                return []
            # A fresh seed per call (and rank): a fixed one would restart sampling from the
            # same random state at every step.
            self._sufficiency_calls += 1
            seed = np.random.SeedSequence(
                [self.args.seed, self.accelerator.process_index, self._sufficiency_calls]
            ).generate_state(1)[0]
            backend = LocalVLMBackend(
                unwrapped_model,
                self.processing_class,
                batch_size=self.args.sufficiency_batch_size,
                seed=int(seed),
            )
            return backend.answer(queries, max_new_tokens=max_new_tokens)

    def _card_results(self) -> dict[str, Any]:
        """The last logged value of each reward and SCCM / tool figure, and the step count."""
        results: dict[str, Any] = {}
        for entry in self.state.log_history:
            for key, value in entry.items():
                if key == "reward" or (
                    key.startswith(_RESULT_PREFIXES) and not key.endswith("/std")
                ):
                    results[key] = value
        if results:
            results["global_step"] = self.state.global_step
        return results

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        *,
        output_dir: str | None = None,
    ) -> None:
        """Write the SCCM model card to ``output_dir``/README.md (``args.output_dir`` by default).

        Replaces TRL's GRPO card, which would credit DeepSeekMath with the method; called by
        ``save_model``, at checkpoints and by ``push_to_hub`` (whose keyword arguments land
        here: ``dataset_name`` is a Hub dataset id, ``tags`` more tags).
        """
        if not self.is_world_process_zero():
            return
        if model_name is None:
            model_name = (
                self.args.hub_model_id.split("/")[-1]
                if self.args.hub_model_id
                else Path(self.args.output_dir).name
            )
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        tags += [t for t in self._tag_names if t not in tags]
        n_user = len(self.reward_funcs) - 2
        user_rewards = [
            (name, float(weight))
            for name, weight in zip(
                self.reward_func_names[:n_user], self.reward_weights[:n_user].tolist()
            )
        ]
        dataset = self.train_dataset
        rows = None
        if hasattr(dataset, "__len__"):
            rows = f"{len(dataset)} row{'' if len(dataset) == 1 else 's'}"
        described = [f"`{dataset_name}`" if dataset_name else None, rows]
        card = sccm_model_card(
            self.args,
            base_model=getattr(self.model.config, "_name_or_path", None) or None,
            user_rewards=user_rewards,
            results=self._card_results(),
            dataset=", ".join(d for d in described if d) or None,
            datasets=[dataset_name] if dataset_name else None,
            repo_id=self.hub_model_id or self.args.hub_model_id,
            model_name=model_name,
            tags=tags,
            box_coords=self._box_coords,
        )
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        card.save(os.path.join(output_dir, "README.md"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as GRPOTrainer does, plus the SCCM model card next to the weights."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.create_model_card(output_dir=output_dir or self.args.output_dir)
