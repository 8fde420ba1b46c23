"""PolicyGradientPruner: backprop-free structural pruning (arXiv 2406.10576).

Every prunable unit (KV-head group, MLP channel) has a keep-probability ``s``. A step
draws K Bernoulli masks, runs K forward passes under ``no_grad`` on one calibration
batch, and moves ``s`` along the score-function (REINFORCE) gradient of the loss with
a moving-average baseline, followed by the bisection projection onto the budget.
Nothing is back-propagated through the model, so pruning costs K forward passes per
step and the memory of inference.

This module is the PEFT-style face (``fit``, ``save_pretrained``, ``from_pretrained``)
and runs the training loop's forward passes; the rest is in small modules it calls:
the initial scores in ``init.py``, the step's math in ``policy.py``, hard masks,
provenance and the saved folder in ``export.py``, the state files in ``state.py``,
the data handling in ``data.py``, the process-group plumbing in ``distributed.py``,
importance metrics and budgets in ``scores.py``. It stays over 400 lines for the
training loop (``fit``, one step, its K masked forward passes, evaluation and
checkpoints on their intervals), whose parts share the pruner's mutable state
(scores, RNG, baseline, step, schedule); the other public methods are a few lines
each over those modules.

Under ``accelerate launch`` (or any initialized ``torch.distributed`` group) the
processes split the K samples (or the batch rows when K is not a multiple of the
number of processes), sum their losses with one all-reduce, and every process then
applies the same update to the same scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_scheduler

from hf_faithful.pruning import export
from hf_faithful.pruning.config import ADAM_BETAS, PruningConfig, describe_method, deviations
from hf_faithful.pruning.data import epoch_order, eval_token_ids, token_chunks
from hf_faithful.pruning.distributed import (
    all_reduce_sum,
    reduce_device,
    split_samples,
    world_and_rank,
)
from hf_faithful.pruning.init import (
    DATA_INITS,
    activation_stats,
    cost_allocation_masks,
    initial_scores,
    sequential_stats,
)
from hf_faithful.pruning.policy import (
    StepBuffers,
    enforce_min_per_layer,
    mean_token_losses,
    policy_gradient,
    sample_masks,
    update_baseline,
)
from hf_faithful.pruning.scores import BudgetProjection, check_head_budget
from hf_faithful.pruning.state import (
    CHECKPOINT_FILE,
    STATE_FILE,
    load_prune_state,
    save_prune_state,
    state_file,
)
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers

# Re-exported: callers imported the state file names and loader from here.
__all__ = ["CHECKPOINT_FILE", "STATE_FILE", "PolicyGradientPruner", "load_prune_state"]

_MAX_SKIPPED = 20


class PolicyGradientPruner:
    """Learn which attention heads and MLP channels to remove, with forward passes only.

    Example:
        ```python
        pruner = PolicyGradientPruner(model, tokenizer, PruningConfig(sparsity=0.5))
        history = pruner.fit(calibration_text)
        pruner.save_pretrained("pruned")  # a smaller model that reloads with from_pretrained
        pruner = PolicyGradientPruner.from_pretrained(model, "pruned")  # scores, step, config
        ```

    With ``max_steps=0``, ``fit`` only computes the initialization, which makes every
    ``init`` metric (Wanda-sp, FLAP, magnitude, random) a one-shot pruner on its own.
    """

    def __init__(self, model: torch.nn.Module, tokenizer=None, config: PruningConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if config is not None else PruningConfig()
        if not isinstance(self.config, PruningConfig):
            raise ValueError(f"config must be a PruningConfig, got {type(self.config).__name__}")
        self.layers = find_prunable_layers(model)
        self._check_compressible()
        self.masks = UnitMasks(self.layers)
        self.head_sizes = self.masks.head_sizes
        self.channel_sizes = self.masks.channel_sizes
        self.prune_heads = self.config.target in ("heads", "both")
        self.prune_channels = self.config.target in ("channels", "both")
        if self.prune_heads:
            check_head_budget(
                self.head_sizes,
                self.config.sparsity,
                per_layer=self.config.budget == "layer",
                min_heads_per_layer=self.config.min_heads_per_layer,
            )

        self.device = model.get_input_embeddings().weight.device
        self.scores_heads = torch.ones(self.masks.num_heads)
        self.scores_channels = torch.ones(self.masks.num_channels)
        self.baseline: float | None = None
        self.step = 0
        self.skipped_steps = 0
        self.initialized = False
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(self.config.seed)
        # calibration means of the inputs of o_proj / down_proj (flat, layer order), the
        # values bias compensation puts in place of removed units
        self.input_means: tuple[torch.Tensor, torch.Tensor] | None = None
        self._epoch_order: tuple[int, torch.Tensor] | None = None
        self._scheduler_state: dict[str, Any] | None = None
        self._optimizer_state: dict[str, Any] | None = None
        self._project_heads = BudgetProjection(self.head_sizes, self.config.budget == "layer")
        self._project_channels = BudgetProjection(self.channel_sizes, self.config.budget == "layer")

    def _check_compressible(self) -> None:
        """Refuse, before any optimization, a model that ``compress`` could not shrink
        exactly (layers elsewhere than ``model.layers.N``, OLMo-2's full-width norms)."""
        from hf_faithful.pruning.compress import check_compressible, check_layer_names

        check_layer_names(self.layers)
        config = getattr(self.model, "config", None)
        if config is not None:
            check_compressible(config)

    @classmethod
    def from_pretrained(
        cls,
        model: torch.nn.Module,
        folder: str | os.PathLike,
        tokenizer=None,
        **config_overrides: Any,
    ) -> PolicyGradientPruner:
        """The pruner that :meth:`save_pretrained` (or a checkpoint) stored in ``folder``.

        ``model`` is the dense model it pruned (the state records its layer sizes and
        refuses another). Config, scores, step, baseline, RNG and schedule are restored,
        so ``fit`` continues where the saved run stopped; ``config_overrides`` replace
        stored config fields (e.g. ``max_steps=600`` to train further).
        """
        _, metadata = load_prune_state(folder)
        if "config" not in metadata:
            raise ValueError(f"prune state in {folder} has no stored config")
        values = {**metadata["config"], **config_overrides}
        pruner = cls(model, tokenizer, PruningConfig.from_dict(values))
        pruner.load_state(folder)
        return pruner

    def keep_ratio(self, step: int | None = None) -> float:
        """Budget keep ratio at ``step`` (the gradual sparsity ramp, if any)."""
        cfg = self.config
        step = self.step if step is None else step
        if cfg.sparsity_warmup_steps:
            return 1.0 - cfg.sparsity * min(1.0, (step + 1) / cfg.sparsity_warmup_steps)
        return 1.0 - cfg.sparsity

    # -------------------------------------------------------------------- data
    def prepare_data(self, data, seq_len: int | None = None) -> torch.Tensor:
        """Token chunks ``[n, seq_len]`` from texts, a ``datasets.Dataset`` or token ids
        (see :func:`hf_faithful.pruning.data.token_chunks`)."""
        return token_chunks(data, self.tokenizer, seq_len or self.config.seq_len)

    def _batch(self, chunks: torch.Tensor, step: int) -> torch.Tensor:
        """Batch of ``step``: a fixed function of (seed, step), so resuming replays it."""
        batch_size = min(self.config.batch_size, chunks.shape[0])
        per_epoch = chunks.shape[0] // batch_size
        epoch, index = divmod(step, per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, epoch_order(chunks.shape[0], self.config.seed, epoch))
        order = self._epoch_order[1]
        return chunks[order[index * batch_size : (index + 1) * batch_size]]

    # ---------------------------------------------------------- initialization
    @torch.no_grad()
    def initialize(self, data=None, *, progress: bool = True) -> None:
        """Set the scores from ``config.init`` (calibration ``data`` for Wanda-sp / FLAP
        and for bias compensation).

        The one-shot structures that fix hard masks directly (FLAP's cost-aware
        allocation; Wanda's sequential calibration without PG steps) store those 0/1
        masks as the scores, so ``hard_masks`` returns exactly them.
        """
        cfg = self.config
        keep = self.keep_ratio(0)
        stats = None
        fixed = None  # exact 0/1 masks of a one-shot structure
        if cfg.init in DATA_INITS or cfg.compensate:
            if data is None:
                needs = f"init={cfg.init!r}" if cfg.init in DATA_INITS else "compensate=True"
                raise ValueError(f"{needs} needs calibration data")
            chunks = self._chunks(data)
            if cfg.sequential_stats:
                stats, *masks = sequential_stats(
                    self.model,
                    self.layers,
                    chunks,
                    cfg,
                    self.device,
                    prune_heads=self.prune_heads,
                    prune_channels=self.prune_channels,
                    progress=progress,
                )
                fixed = None if cfg.max_steps else masks
            else:
                stats = activation_stats(
                    self.model, self.layers, chunks, cfg, self.device, progress=progress
                )
        if cfg.allocation == "cost":
            fixed = cost_allocation_masks(
                cfg,
                self.layers,
                self.head_sizes,
                stats,
                prune_heads=self.prune_heads,
                prune_channels=self.prune_channels,
            )
        if cfg.compensate:
            self._set_input_means(*stats.means())
        if fixed is not None:
            self.scores_heads.copy_(fixed[0])
            self.scores_channels.copy_(fixed[1])
        else:
            heads, channels = initial_scores(
                cfg, self.layers, self.head_sizes, self.channel_sizes, keep, stats
            )
            self.scores_heads.copy_(heads if self.prune_heads else torch.ones_like(heads))
            self.scores_channels.copy_(
                channels if self.prune_channels else torch.ones_like(channels)
            )
            self._project(keep)
        self.initialized = True

    def _chunks(self, data) -> torch.Tensor:
        return data if torch.is_tensor(data) and data.dim() == 2 else self.prepare_data(data)

    def _set_input_means(self, o_means: torch.Tensor, down_means: torch.Tensor) -> None:
        self.input_means = (o_means.double().cpu(), down_means.double().cpu())
        self.masks.set_means(*self.input_means)

    @torch.no_grad()
    def _ensure_input_means(self, chunks: torch.Tensor, progress: bool) -> None:
        """Compensation needs the input means; a warm start or an older checkpoint may
        lack them, so they are measured (dense statistics) before training."""
        if self.config.compensate and self.input_means is None:
            stats = activation_stats(
                self.model, self.layers, chunks, self.config, self.device, progress=progress
            )
            self._set_input_means(*stats.means())

    def _project(self, keep: float) -> None:
        if self.prune_heads:
            self._project_heads(self.scores_heads, keep)
        if self.prune_channels:
            self._project_channels(self.scores_channels, keep)

    # --------------------------------------------------------------- training
    def fit(
        self,
        train_data,
        eval_data=None,
        *,
        resume_from_checkpoint: bool | str | os.PathLike | None = None,
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Optimize the keep-probabilities on ``train_data``; returns the history.

        ``resume_from_checkpoint`` takes a checkpoint path, or True for
        ``config.output_dir/checkpoint.safetensors``. ``eval_data`` (text or token
        ids) is evaluated with the hard masks every ``config.eval_steps`` steps.
        """
        cfg = self.config
        chunks = self.prepare_data(train_data)
        self._epoch_order = None
        eval_ids = self._eval_ids(eval_data) if eval_data is not None else None
        self._resume_or_initialize(chunks, resume_from_checkpoint, progress)
        if self.step >= cfg.max_steps:
            return self.history

        world, rank = world_and_rank()
        buffers = StepBuffers.allocate(
            cfg.num_samples,
            self.masks.num_heads,
            self.masks.num_channels,
            reduce_device(self.device),
        )
        optimizer, scheduler = self._optimizer()
        self.masks.set(
            torch.ones(self.masks.num_heads) if self.prune_heads else None,
            torch.ones(self.masks.num_channels) if self.prune_channels else None,
        )
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="pruning",
            disable=not progress or rank != 0,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with self.masks.applied():
                while self.step < cfg.max_steps:
                    batch = self._batch(chunks, self.step)
                    record = self._train_step(batch, buffers, optimizer, world, rank)
                    scheduler.step()
                    self.step += 1
                    bar.update(1)
                    self._after_step(record, bar, eval_ids, scheduler, optimizer, rank)
        finally:
            bar.close()
            self.model.train(was_training)
        self._scheduler_state = scheduler.state_dict()
        self._optimizer_state = optimizer.state_dict()
        return self.history

    def _resume_or_initialize(self, chunks, resume_from_checkpoint, progress: bool) -> None:
        if resume_from_checkpoint:
            path = (
                Path(self.config.output_dir or ".") / CHECKPOINT_FILE
                if resume_from_checkpoint is True
                else Path(resume_from_checkpoint)
            )
            self.load_state(path)
        elif not self.initialized:
            self.initialize(chunks, progress=progress)
        self._ensure_input_means(chunks, progress)

    def _train_step(self, batch, buf: StepBuffers, optimizer, world, rank) -> dict[str, Any]:
        """Sample K masks, measure their losses, take one SGD step; returns the record."""
        cfg = self.config
        K = cfg.num_samples
        if self.prune_heads:
            sample_masks(self.scores_heads, K, self.generator, out=buf.heads)
            enforce_min_per_layer(
                buf.heads, self.scores_heads, self.head_sizes, cfg.min_heads_per_layer
            )
        if self.prune_channels:
            sample_masks(self.scores_channels, K, self.generator, out=buf.channels)
        self._sample_losses(batch, buf.heads, buf.channels, buf.sums, world, rank)
        losses, valid = mean_token_losses(buf.sums)
        record = {
            "step": self.step + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "keep": self.keep_ratio(),
        }
        if not bool(valid.any()):
            self.skipped_steps += 1
            if self.skipped_steps >= _MAX_SKIPPED and self.skipped_steps == self.step + 1:
                raise ValueError(
                    f"all {K} losses were NaN/inf in each of the first {_MAX_SKIPPED} "
                    "steps: the model gives non-finite losses on this data (check "
                    "the dtype and the inputs)"
                )
            record["skipped"] = True
            self.scores_heads.grad.zero_()
            self.scores_channels.grad.zero_()
            optimizer.step()  # a no-op that keeps the schedule in step
            return record
        mean_loss = float(losses[valid].mean())
        self.baseline = update_baseline(self.baseline, mean_loss, cfg.baseline_window)
        for prune, scores, masks, work in (
            (self.prune_heads, self.scores_heads, buf.heads, buf.work_heads),
            (self.prune_channels, self.scores_channels, buf.channels, buf.work_channels),
        ):
            if prune:
                policy_gradient(
                    scores,
                    masks,
                    losses,
                    valid,
                    self.baseline,
                    estimator=cfg.estimator,
                    entropy_weight=cfg.entropy_weight,
                    out=scores.grad,
                    work=work,
                )
        optimizer.step()
        self._project(self.keep_ratio(self.step + 1))
        record.update(loss=mean_loss, baseline=self.baseline)
        return record

    def _after_step(self, record, bar, eval_ids, scheduler, optimizer, rank: int) -> None:
        """Log, evaluate and checkpoint on their step intervals."""
        cfg = self.config
        if cfg.logging_steps and self.step % cfg.logging_steps == 0:
            self.history.append(record)
            if "loss" in record:
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    baseline=f"{self.baseline:.4f}",
                    lr=f"{record['lr']:.2e}",
                )
        if eval_ids is not None and cfg.eval_steps and self.step % cfg.eval_steps == 0:
            ppl = self._evaluate_in_loop(eval_ids)
            self.history.append({"step": self.step, "eval_perplexity": ppl})
            bar.write(f"step {self.step}: perplexity {ppl:.3f} (hard masks)")
        if cfg.save_steps and self.step % cfg.save_steps == 0 and rank == 0:
            self.save_state(
                Path(cfg.output_dir) / CHECKPOINT_FILE,
                scheduler=scheduler,
                optimizer=optimizer,
            )

    def _optimizer(self):
        cfg = self.config
        params = [self.scores_heads, self.scores_channels]
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(
                params, lr=cfg.learning_rate, betas=ADAM_BETAS, weight_decay=cfg.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scores_heads.grad = torch.zeros_like(self.scores_heads)
        self.scores_channels.grad = torch.zeros_like(self.scores_channels)
        if self._optimizer_state:  # moments only: the groups (lr, betas) come from the config
            fresh = optimizer.state_dict()
            fresh["state"] = self._optimizer_state["state"]
            optimizer.load_state_dict(fresh)
        scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer,
            num_warmup_steps=0,
            num_training_steps=max(cfg.max_steps, 1),
        )
        if self._scheduler_state:
            scheduler.load_state_dict(self._scheduler_state)
            optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]
        return optimizer, scheduler

    @torch.no_grad()
    def _sample_losses(self, batch, heads_buf, channels_buf, sums, world, rank) -> None:
        """Fill ``sums[k] = (summed token loss, token count)`` of each sample, all ranks."""
        K = heads_buf.shape[0]
        sums.zero_()
        samples, rows = split_samples(K, batch, world, rank)
        if rows.shape[0]:
            rows = rows.to(self.device)
            labels = torch.full_like(rows, -100)
            labels[:, :-1] = rows[:, 1:]
            for k in samples:
                self.masks.set(
                    heads_buf[k] if self.prune_heads else None,
                    channels_buf[k] if self.prune_channels else None,
                )
                logits = self.model(input_ids=rows, use_cache=False).logits
                total = 0.0
                for i in range(
                    rows.shape[0]
                ):  # one row at a time: no full float32 copy of the logits
                    total += F.cross_entropy(logits[i].float(), labels[i], reduction="sum")
                sums[k, 0] = total
                sums[k, 1] = (labels != -100).sum()
                del logits
        if world > 1:
            all_reduce_sum(sums)

    # -------------------------------------------------------------- results
    def hard_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """0/1 masks (heads, channels; flat, layer order) keeping the top scores (FLAP's
        cost-aware allocation: the masks it chose, stored as the scores)."""
        if self.config.allocation == "cost":
            return (self.scores_heads > 0.5).float(), (self.scores_channels > 0.5).float()
        return export.final_masks(
            self.config,
            self.scores_heads,
            self.scores_channels,
            self.head_sizes,
            self.channel_sizes,
        )

    def layer_sizes(self) -> dict[str, list[int]]:
        """Per-layer sizes the compressed model will have."""
        heads, channels = self.hard_masks()
        return export.compressed_sizes(
            self.layers, heads, channels, self.head_sizes, self.channel_sizes
        )

    def _set_hard_masks(self) -> None:
        heads, channels = self.hard_masks()
        self.masks.set(
            heads if self.prune_heads else None, channels if self.prune_channels else None
        )

    def masked(self):
        """Context manager running ``self.model`` with the hard masks applied (no copy)."""
        self._set_hard_masks()
        return self.masks.applied()

    def _eval_ids(self, data) -> torch.Tensor:
        return eval_token_ids(data, self.tokenizer)

    def _perplexity(self, eval_ids: torch.Tensor, max_chunks: int | None = None) -> float:
        from hf_faithful.evaluation.perplexity import perplexity

        return perplexity(
            self.model,
            input_ids=eval_ids,
            seq_len=self.config.seq_len,
            max_chunks=max_chunks,
            device=self.device,
            progress=False,
        )

    def _evaluate_in_loop(self, eval_ids) -> float:
        self._set_hard_masks()  # inside fit's hooks: only the masks change
        return self._perplexity(eval_ids)

    def evaluate(self, data, *, max_chunks: int | None = None) -> float:
        """Perplexity of the hard-masked model on ``data`` (text or token ids)."""
        with self.masked():
            return self._perplexity(self._eval_ids(data), max_chunks)

    def compress(self):
        """A new, physically smaller [`PrunedLlamaForCausalLM`] with the hard masks' units."""
        from hf_faithful.pruning.compress import compress_model

        heads, channels = self.hard_masks()
        means = self.input_means if self.config.compensate else None
        return compress_model(
            self.model,
            self.layers,
            heads,
            channels,
            provenance=self.provenance(),
            input_means=(
                (
                    means[0] if self.prune_heads else None,
                    means[1] if self.prune_channels else None,
                )
                if means is not None
                else None
            ),
        )

    def provenance(self) -> dict[str, Any]:
        """How the pruned model was made (see :func:`hf_faithful.pruning.export.provenance`),
        with the method named, its deviations from the papers, and the calibration and
        evaluation data the caller recorded in ``config.extra``."""
        cfg = self.config
        out = export.provenance(self.model, cfg, self.step)
        out["method"] = describe_method(cfg)
        out["bias_compensation"] = cfg.compensate
        for key in ("calibration", "evaluation"):
            if cfg.extra.get(key):
                out[key] = cfg.extra[key]
        found = deviations(cfg)
        if found:
            out["deviations from the papers"] = "; ".join(found)
        return out

    # ----------------------------------------------------------------- state
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of the prune state (the format of ``state.py``)."""
        heads, channels = self.hard_masks()
        tensors = {
            "scores_heads": self.scores_heads.detach().clone(),
            "scores_channels": self.scores_channels.detach().clone(),
            "mask_heads": heads,
            "mask_channels": channels,
            "generator": self.generator.get_state(),
        }
        if self.input_means is not None:
            tensors["input_mean_o"], tensors["input_mean_down"] = self.input_means
        optimizer_state = (self._optimizer_state or {}).get("state", {})
        for index, pool in enumerate(("heads", "channels")):
            for key, value in optimizer_state.get(index, {}).items():
                tensors[f"optimizer_{pool}_{key}"] = torch.as_tensor(value)
        metadata = {
            "step": self.step,
            "baseline": self.baseline,
            "skipped_steps": self.skipped_steps,
            "history": self.history,
            "config": self.config.to_dict(),
            "head_sizes": self.head_sizes,
            "channel_sizes": self.channel_sizes,
            "scheduler": self._scheduler_state,
        }
        return tensors, metadata

    def save_state(self, path: str | os.PathLike, *, scheduler=None, optimizer=None) -> Path:
        """Write scores, masks, step, baseline, RNG, optimizer moments and the
        compensation means atomically (safetensors)."""
        if scheduler is not None:
            self._scheduler_state = scheduler.state_dict()
        if optimizer is not None:
            self._optimizer_state = optimizer.state_dict()
        tensors, metadata = self.state_dict()
        return save_prune_state(tensors, metadata, state_file(path))

    def load_state(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save_state` output (a file, or a folder holding one)."""
        tensors, metadata = load_prune_state(path)
        if (
            metadata.get("head_sizes") != self.head_sizes
            or metadata.get("channel_sizes") != self.channel_sizes
        ):
            raise ValueError(f"prune state {path} was made for a model with other layer sizes")
        self.scores_heads.copy_(tensors["scores_heads"])
        self.scores_channels.copy_(tensors["scores_channels"])
        self.generator.set_state(tensors["generator"])
        self.step = int(metadata["step"])
        self.baseline = metadata["baseline"]
        self.skipped_steps = int(metadata.get("skipped_steps", 0))
        self.history = list(metadata.get("history", []))
        self._scheduler_state = metadata.get("scheduler")
        self._optimizer_state = _optimizer_state(tensors)
        if "input_mean_o" in tensors:
            self._set_input_means(tensors["input_mean_o"], tensors["input_mean_down"])
        self.initialized = True

    # ---------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        perplexity: dict[str, float] | None = None,
        compressed: torch.nn.Module | None = None,
    ):
        """Save the compressed model, tokenizer, prune state and a model card.

        ``perplexity`` (e.g. ``{"before": 66.1, "after": 84.2}``) goes into the card;
        ``compressed`` reuses a model from :meth:`compress`. Returns the saved model.
        """
        pruned = compressed if compressed is not None else self.compress()
        export.write_pruned_folder(
            save_directory,
            pruned,
            dense_model=self.model,
            tokenizer=self.tokenizer,
            state=self.state_dict(),
            perplexity=perplexity,
        )
        return pruned

    def push_to_hub(
        self,
        repo_id: str,
        *,
        perplexity: dict[str, float] | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload pruned model (hf-faithful)",
    ) -> str:
        """Save to a temporary folder and upload it; returns the commit URL."""
        return export.push_saved(
            lambda folder: self.save_pretrained(folder, perplexity=perplexity),
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
        )


def _optimizer_state(tensors: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The per-parameter optimizer state (Adam's moments and step) from the
    ``optimizer_<pool>_<key>`` tensors of a prune state, or None (plain SGD has none)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for index, pool in enumerate(("heads", "channels")):
        prefix = f"optimizer_{pool}_"
        found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if found:
            state[index] = found
    return {"state": state} if state else None
