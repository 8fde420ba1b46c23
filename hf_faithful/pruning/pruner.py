"""PolicyGradientPruner: backprop-free structural pruning (arXiv 2406.10576).

Every prunable unit (KV-head group, MLP channel) has a keep-probability ``s``. A step
draws K Bernoulli masks, runs K forward passes under ``no_grad`` on one calibration
batch, and moves ``s`` along the score-function (REINFORCE) gradient of the loss with
a moving-average baseline, followed by the bisection projection onto the budget.
Nothing is back-propagated through the model, so pruning costs K forward passes per
step and the memory of inference.

Under ``accelerate launch`` (or any initialized ``torch.distributed`` group) the
processes split the K samples (or the batch rows when K is not a multiple of the
number of processes), sum their losses with one all-reduce, and every process then
applies the same update to the same scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.scores import (
    BudgetProjection,
    collect_activation_stats,
    hard_mask,
    keep_count,
    transform_scores,
    unit_metrics,
)
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers

STATE_FILE = "prune_state.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
_EPS = 1e-6
_MAX_SKIPPED = 20


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(tmp),
        metadata={"hf_faithful": json.dumps(metadata)},
    )
    os.replace(tmp, path)


def load_prune_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a prune state file, a checkpoint, or a pruned-model folder."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / STATE_FILE, path / CHECKPOINT_FILE]
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"no prune state at {path}")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get("hf_faithful", "{}"))
    return load_file(str(path)), metadata


class PolicyGradientPruner:
    """Learn which attention heads and MLP channels to remove, with forward passes only.

    Example:
        ```python
        pruner = PolicyGradientPruner(model, tokenizer, PruningConfig(sparsity=0.5))
        history = pruner.fit(calibration_text)
        pruner.save_pretrained("pruned")  # a smaller model that reloads with from_pretrained
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
        self.masks = UnitMasks(self.layers)
        self.head_sizes = self.masks.head_sizes
        self.channel_sizes = self.masks.channel_sizes
        self.prune_heads = self.config.target in ("heads", "both")
        self.prune_channels = self.config.target in ("channels", "both")
        self._check_budget()

        self.device = model.get_input_embeddings().weight.device
        self.scores_heads = torch.ones(self.masks.num_heads)
        self.scores_channels = torch.ones(self.masks.num_channels)
        self.baseline: float | None = None
        self.step = 0
        self.skipped_steps = 0
        self.initialized = False
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self._epoch_order: tuple[int, torch.Tensor] | None = None
        self._scheduler_state: dict[str, Any] | None = None
        self._project_heads = BudgetProjection(self.head_sizes, self.config.budget == "layer")
        self._project_channels = BudgetProjection(self.channel_sizes, self.config.budget == "layer")

    # ------------------------------------------------------------------ budget
    def _check_budget(self) -> None:
        cfg = self.config
        if not self.prune_heads:
            return
        keep = 1.0 - cfg.sparsity
        if cfg.budget == "global":
            kept = keep_count(sum(self.head_sizes), keep)
            needed = cfg.min_heads_per_layer * len(self.head_sizes)
            if kept < needed:
                raise ValueError(
                    f"sparsity={cfg.sparsity} keeps {kept} of {sum(self.head_sizes)} KV-head groups, "
                    f"fewer than min_heads_per_layer={cfg.min_heads_per_layer} in each of "
                    f"{len(self.head_sizes)} layers; lower the sparsity"
                )
        if any(n < cfg.min_heads_per_layer for n in self.head_sizes):
            raise ValueError(
                f"min_heads_per_layer={cfg.min_heads_per_layer} exceeds the KV heads of a layer "
                f"({min(self.head_sizes)})"
            )

    def keep_ratio(self, step: int | None = None) -> float:
        """Budget keep ratio at ``step`` (the gradual sparsity ramp, if any)."""
        cfg = self.config
        step = self.step if step is None else step
        if cfg.sparsity_warmup_steps:
            return 1.0 - cfg.sparsity * min(1.0, (step + 1) / cfg.sparsity_warmup_steps)
        return 1.0 - cfg.sparsity

    # -------------------------------------------------------------------- data
    def prepare_data(self, data, seq_len: int | None = None) -> torch.Tensor:
        """Token chunks ``[n, seq_len]`` from texts, a ``datasets.Dataset`` or token ids.

        Texts are joined with "\\n\\n", tokenized once and cut into non-overlapping
        chunks (the perplexity protocol); a 2-D tensor is used as it is.
        """
        seq_len = seq_len or self.config.seq_len
        if hasattr(data, "column_names"):  # datasets.Dataset
            if "input_ids" in data.column_names:
                data = torch.tensor([t for row in data["input_ids"] for t in row], dtype=torch.long)
            elif "text" in data.column_names:
                data = list(data["text"])
            else:
                raise ValueError(
                    f"calibration dataset needs a 'text' or 'input_ids' column, has {data.column_names}"
                )
        if isinstance(data, list | tuple) and data and all(torch.is_tensor(t) for t in data):
            data = (
                torch.cat([t.reshape(-1) for t in data]) if data[0].dim() <= 1 else torch.cat(data)
            )
        if isinstance(data, str) or (
            isinstance(data, list | tuple) and data and all(isinstance(t, str) for t in data)
        ):
            if self.tokenizer is None:
                raise ValueError("a tokenizer is required to calibrate on text")
            from hf_faithful.evaluation.perplexity import tokenize_text

            data = tokenize_text(self.tokenizer, data)
        if not torch.is_tensor(data):
            raise ValueError(
                "calibration data must be text, a list of texts, a datasets.Dataset with a 'text' "
                f"or 'input_ids' column, or a tensor of token ids; got {type(data).__name__}"
            )
        data = data.long()
        if data.dim() == 2:
            if data.shape[1] < 2 or data.shape[0] == 0:
                raise ValueError(
                    f"token batches must have shape [n, seq_len>=2], got {tuple(data.shape)}"
                )
            return data
        if data.dim() != 1:
            raise ValueError(f"token ids must be 1-D or 2-D, got shape {tuple(data.shape)}")
        n = data.numel() // seq_len
        if n == 0:
            raise ValueError(
                f"calibration data has {data.numel()} tokens, fewer than one sequence of "
                f"seq_len={seq_len}"
            )
        return data[: n * seq_len].view(n, seq_len)

    def _batch(self, chunks: torch.Tensor, step: int) -> torch.Tensor:
        """Batch of ``step``: a fixed function of (seed, step), so resuming replays it."""
        batch_size = min(self.config.batch_size, chunks.shape[0])
        per_epoch = chunks.shape[0] // batch_size
        epoch, index = divmod(step, per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
            self._epoch_order = (epoch, torch.randperm(chunks.shape[0], generator=gen))
        order = self._epoch_order[1]
        return chunks[order[index * batch_size : (index + 1) * batch_size]]

    # ---------------------------------------------------------- initialization
    @torch.no_grad()
    def initialize(self, data=None, *, progress: bool = True) -> None:
        """Set the scores from ``config.init`` (calibration ``data`` for Wanda-sp / FLAP)."""
        cfg = self.config
        keep = self.keep_ratio(0)
        if cfg.init == "state":
            tensors, _ = load_prune_state(cfg.init_state_path)
            for name, current in (
                ("scores_heads", self.scores_heads),
                ("scores_channels", self.scores_channels),
            ):
                if name not in tensors or tensors[name].numel() != current.numel():
                    raise ValueError(
                        f"init_state_path {cfg.init_state_path}: {name} does not match this model "
                        f"({current.numel()} units)"
                    )
                current.copy_(tensors[name])
        elif cfg.init == "constant":
            self.scores_heads.fill_(keep)
            self.scores_channels.fill_(keep)
        else:
            stats = None
            if cfg.init in ("wanda_sp", "flap"):
                if data is None:
                    raise ValueError(f"init={cfg.init!r} needs calibration data")
                chunks = (
                    data if torch.is_tensor(data) and data.dim() == 2 else self.prepare_data(data)
                )
                stats = self._activation_stats(chunks, progress)
            gen = torch.Generator().manual_seed(cfg.seed + 1)
            heads, channels = unit_metrics(cfg.init, self.layers, stats, generator=gen)
            self.scores_heads.copy_(
                transform_scores(heads, self.head_sizes, keep, cfg.init_transform)
            )
            self.scores_channels.copy_(
                transform_scores(channels, self.channel_sizes, keep, cfg.init_transform)
            )
        if not self.prune_heads:
            self.scores_heads.fill_(1.0)
        if not self.prune_channels:
            self.scores_channels.fill_(1.0)
        self._project(keep)
        self.initialized = True

    def _activation_stats(self, chunks: torch.Tensor, progress: bool):
        cfg = self.config
        order = torch.randperm(chunks.shape[0], generator=torch.Generator().manual_seed(cfg.seed))
        chosen = chunks[order[: cfg.init_num_samples]]
        world, rank = _distributed()
        batches = list(chosen.split(cfg.batch_size))[rank::world]
        was_training = self.model.training
        self.model.eval()
        try:
            stats = collect_activation_stats(
                self.model,
                self.layers,
                batches,
                device=self.device,
                progress=progress and rank == 0,
            )
        finally:
            self.model.train(was_training)
        if world > 1:
            for tensors in (stats.o_sum, stats.o_sq, stats.down_sum, stats.down_sq):
                for t in tensors:
                    torch.distributed.all_reduce(t)
            stats.tokens = chosen.numel()
        return stats

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
        if resume_from_checkpoint:
            path = (
                Path(cfg.output_dir or ".") / CHECKPOINT_FILE
                if resume_from_checkpoint is True
                else Path(resume_from_checkpoint)
            )
            self.load_state(path)
        elif not self.initialized:
            self.initialize(chunks, progress=progress)
        if self.step >= cfg.max_steps:
            return self.history

        world, rank = _distributed()
        K = cfg.num_samples
        heads_buf = torch.empty(K, self.masks.num_heads)
        channels_buf = torch.empty(K, self.masks.num_channels)
        grad_heads = torch.zeros(self.masks.num_heads)
        grad_channels = torch.zeros(self.masks.num_channels)
        work_heads = torch.empty(self.masks.num_heads)
        work_channels = torch.empty(self.masks.num_channels)
        sums = torch.zeros(K, 2, dtype=torch.float64, device=self._reduce_device())
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
                    if self.prune_heads:
                        heads_buf.bernoulli_(
                            self.scores_heads.expand(K, -1), generator=self.generator
                        )
                        if cfg.min_heads_per_layer:
                            self._enforce_min_heads(heads_buf)
                    if self.prune_channels:
                        channels_buf.bernoulli_(
                            self.scores_channels.expand(K, -1), generator=self.generator
                        )
                    self._sample_losses(batch, heads_buf, channels_buf, sums, world, rank)
                    losses = (sums[:, 0] / sums[:, 1].clamp_min(1)).cpu()
                    valid = torch.isfinite(losses)
                    lr = optimizer.param_groups[0]["lr"]
                    record = {"step": self.step + 1, "lr": lr, "keep": self.keep_ratio()}
                    if not bool(valid.any()):
                        self.skipped_steps += 1
                        if (
                            self.skipped_steps >= _MAX_SKIPPED
                            and self.skipped_steps == self.step + 1
                        ):
                            raise ValueError(
                                f"all {K} losses were NaN/inf in each of the first {_MAX_SKIPPED} "
                                "steps: the model gives non-finite losses on this data (check "
                                "the dtype and the inputs)"
                            )
                        record["skipped"] = True
                        self.scores_heads.grad.zero_()
                        self.scores_channels.grad.zero_()
                        optimizer.step()  # a no-op that keeps the schedule in step
                    else:
                        mean_loss = float(losses[valid].mean())
                        if self.baseline is None:
                            self.baseline = mean_loss
                        else:
                            w = cfg.baseline_window
                            self.baseline = (1 - 1 / w) * self.baseline + mean_loss / w
                        for prune, scores, masks, grad, work in (
                            (
                                self.prune_heads,
                                self.scores_heads,
                                heads_buf,
                                grad_heads,
                                work_heads,
                            ),
                            (
                                self.prune_channels,
                                self.scores_channels,
                                channels_buf,
                                grad_channels,
                                work_channels,
                            ),
                        ):
                            if prune:
                                self._gradient(scores, masks, losses, valid, grad, work)
                        optimizer.step()
                        self._project(self.keep_ratio(self.step + 1))
                        record.update(loss=mean_loss, baseline=self.baseline)
                    scheduler.step()
                    self.step += 1
                    bar.update(1)
                    if cfg.logging_steps and self.step % cfg.logging_steps == 0:
                        self.history.append(record)
                        if "loss" in record:
                            bar.set_postfix(
                                loss=f"{record['loss']:.4f}",
                                baseline=f"{self.baseline:.4f}",
                                lr=f"{lr:.2e}",
                            )
                    if eval_ids is not None and cfg.eval_steps and self.step % cfg.eval_steps == 0:
                        ppl = self._evaluate_in_loop(eval_ids)
                        self.history.append({"step": self.step, "eval_perplexity": ppl})
                        bar.write(f"step {self.step}: perplexity {ppl:.3f} (hard masks)")
                    if cfg.save_steps and self.step % cfg.save_steps == 0 and rank == 0:
                        self.save_state(Path(cfg.output_dir) / CHECKPOINT_FILE, scheduler=scheduler)
        finally:
            bar.close()
            self.model.train(was_training)
        self._scheduler_state = scheduler.state_dict()
        return self.history

    @torch.no_grad()
    def _enforce_min_heads(self, heads_buf: torch.Tensor) -> None:
        """Switch on a layer's most probable heads where a sample keeps too few.

        With ``min_heads_per_layer > 0`` the policy then only explores architectures
        the hard mask (which keeps that many per layer) can produce.
        """
        need = self.config.min_heads_per_layer
        for part, scores in zip(
            heads_buf.split(self.head_sizes, dim=1), self.scores_heads.split(self.head_sizes)
        ):
            short = part.sum(1) < need
            if bool(short.any()):
                top = torch.topk(scores, need, sorted=False).indices
                part[short.nonzero()[:, None], top] = 1.0

    def _reduce_device(self) -> torch.device:
        world, _ = _distributed()
        if world > 1 and torch.distributed.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    def _optimizer(self):
        cfg = self.config
        optimizer = torch.optim.SGD([self.scores_heads, self.scores_channels], lr=cfg.learning_rate)
        self.scores_heads.grad = torch.zeros_like(self.scores_heads)
        self.scores_channels.grad = torch.zeros_like(self.scores_channels)
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
        if world > 1 and K % world == 0:
            samples, rows = range(rank, K, world), batch
        else:
            samples, rows = range(K), batch.tensor_split(world)[rank]
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
            torch.distributed.all_reduce(sums)

    @torch.no_grad()
    def _gradient(self, scores, masks, losses, valid, grad, work) -> None:
        """``grad = 1/(K-1) sum_k (L_k - delta)(m_k - s) / d(s)`` (+ entropy), in place."""
        cfg = self.config
        grad.zero_()
        n_valid = int(valid.sum())
        for k in torch.nonzero(valid).flatten().tolist():
            torch.sub(masks[k], scores, out=work)
            grad.add_(work, alpha=float(losses[k]) - self.baseline)
        grad.div_(max(n_valid - 1, 1))
        torch.mul(scores, 1 - scores, out=work)
        work.clamp_(min=_EPS)
        if cfg.estimator == "sqrt":
            work.sqrt_()
        grad.div_(work)
        if cfg.entropy_weight:
            s = scores.clamp(_EPS, 1 - _EPS)
            grad.add_(torch.log1p(-s) - torch.log(s), alpha=cfg.entropy_weight)
        scores.grad.copy_(grad)

    # -------------------------------------------------------------- results
    def hard_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """0/1 masks (heads, channels; flat, layer order) keeping the top scores."""
        cfg = self.config
        keep = 1.0 - cfg.sparsity
        per_layer = cfg.budget == "layer"
        heads = (
            hard_mask(
                self.scores_heads,
                self.head_sizes,
                keep,
                per_layer=per_layer,
                min_per_layer=cfg.min_heads_per_layer,
            )
            if self.prune_heads
            else torch.ones(self.masks.num_heads)
        )
        channels = (
            hard_mask(
                self.scores_channels, self.channel_sizes, keep, per_layer=per_layer, min_per_layer=0
            )
            if self.prune_channels
            else torch.ones(self.masks.num_channels)
        )
        return heads, channels

    def layer_sizes(self) -> dict[str, list[int]]:
        """Per-layer sizes the compressed model will have."""
        heads, channels = self.hard_masks()
        kv = [int(p.sum()) for p in heads.split(self.head_sizes)]
        return {
            "num_key_value_heads": kv,
            "num_attention_heads": [n * layer.group_size for n, layer in zip(kv, self.layers)],
            "intermediate_size": [int(p.sum()) for p in channels.split(self.channel_sizes)],
        }

    def masked(self):
        """Context manager running ``self.model`` with the hard masks applied (no copy)."""
        heads, channels = self.hard_masks()
        self.masks.set(
            heads if self.prune_heads else None, channels if self.prune_channels else None
        )
        return self.masks.applied()

    def _eval_ids(self, data) -> torch.Tensor:
        if isinstance(data, str) or (isinstance(data, Sequence) and not torch.is_tensor(data)):
            if self.tokenizer is None:
                raise ValueError("a tokenizer is required to evaluate on text")
            from hf_faithful.evaluation.perplexity import tokenize_text

            return tokenize_text(self.tokenizer, data)
        return torch.as_tensor(data).reshape(-1)

    def _evaluate_in_loop(self, eval_ids) -> float:
        from hf_faithful.evaluation.perplexity import perplexity

        heads, channels = self.hard_masks()
        self.masks.set(
            heads if self.prune_heads else None, channels if self.prune_channels else None
        )
        return perplexity(
            self.model,
            input_ids=eval_ids,
            seq_len=self.config.seq_len,
            device=self.device,
            progress=False,
        )

    def evaluate(self, data, *, max_chunks: int | None = None) -> float:
        """Perplexity of the hard-masked model on ``data`` (text or token ids)."""
        from hf_faithful.evaluation.perplexity import perplexity

        with self.masked():
            return perplexity(
                self.model,
                input_ids=self._eval_ids(data),
                seq_len=self.config.seq_len,
                max_chunks=max_chunks,
                device=self.device,
                progress=False,
            )

    def compress(self):
        """A new, physically smaller [`PrunedLlamaForCausalLM`] with the hard masks' units."""
        from hf_faithful.pruning.compress import compress_model

        heads, channels = self.hard_masks()
        return compress_model(
            self.model, self.layers, heads, channels, provenance=self.provenance()
        )

    def provenance(self) -> dict[str, Any]:
        cfg = self.config
        base = getattr(getattr(self.model, "config", None), "_name_or_path", "") or None
        return {
            "base_model": cfg.extra.get("base_model", base),
            "method": f"policy_gradient (init={cfg.init})"
            if cfg.max_steps
            else f"one-shot {cfg.init}",
            "sparsity": cfg.sparsity,
            "target": cfg.target,
            "budget": cfg.budget,
            "steps": self.step,
            "num_samples": cfg.num_samples,
            "seed": cfg.seed,
            "library": "hf-faithful",
            "paper": "arXiv:2406.10576",
        }

    # ----------------------------------------------------------------- state
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        heads, channels = self.hard_masks()
        tensors = {
            "scores_heads": self.scores_heads.detach().clone(),
            "scores_channels": self.scores_channels.detach().clone(),
            "mask_heads": heads,
            "mask_channels": channels,
            "generator": self.generator.get_state(),
        }
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

    def save_state(self, path: str | os.PathLike, *, scheduler=None) -> Path:
        """Write scores, masks, step, baseline and RNG state atomically (safetensors)."""
        if scheduler is not None:
            self._scheduler_state = scheduler.state_dict()
        tensors, metadata = self.state_dict()
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / STATE_FILE
        _atomic_save(tensors, metadata, path)
        return path

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
        from hf_faithful.hub import pruned_model_card

        save_directory = Path(save_directory)
        pruned = compressed if compressed is not None else self.compress()
        pruned.save_pretrained(save_directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        self.save_state(save_directory / STATE_FILE)
        card = pruned_model_card(
            pruned.config,
            params_before=sum(p.numel() for p in self.model.parameters()),
            params_after=sum(p.numel() for p in pruned.parameters()),
            perplexity=perplexity,
        )
        card.save(save_directory / "README.md")
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
        import tempfile

        from hf_faithful.hub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, perplexity=perplexity)
            return push_folder(
                tmp, repo_id, private=private, token=token, commit_message=commit_message
            )
