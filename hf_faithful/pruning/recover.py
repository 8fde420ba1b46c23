"""Recovery fine-tuning: LoRA on a pruned model, merged back into its smaller weights.

Removing whole heads and channels costs perplexity that a short fine-tune buys back
(LLM-Pruner, Sheared-LLaMA). Full fine-tuning would need the optimizer memory that
backprop-free pruning avoids, so we train a LoRA adapter through PEFT instead and
merge it (``merge_and_unload``): the result is the same ``PrunedLlamaForCausalLM``
with the same per-layer sizes, saved in the same format as its input (same
``modeling_pruned.py`` and ``auto_map``), so it reloads wherever the pruned folder did.

The job is described by a :class:`RecoveryConfig`, as a PEFT config describes an
adapter; :func:`recover` runs it. Device placement and gradient accumulation go
through accelerate's ``Accelerator``, so the same code runs on CPU, one GPU, or under
``accelerate launch``. Every ``save_steps`` steps the adapter, optimizer, schedule and
step are written atomically to ``output_dir/recovery_checkpoint.pt``; running the same
job again resumes from it. Batches and dropout are fixed functions of (seed, step), so
a resumed run reproduces an uninterrupted one. See docs/METHODS.md#recovery-fine-tuning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from hf_faithful.pruning.data import epoch_order, token_chunks

CHECKPOINT_FILE = "recovery_checkpoint.pt"
ADAPTER_DIR = "recovery_adapter"
LOG_FILE = "recovery.json"
SECTION_HEADING = "## Recovery fine-tuning"
BUNDLED_DATA = "bundled calibration text (last 30% of WikiText-2 valid, by lines)"
BUNDLED_EVAL = "WikiText-2 test"
# Lines this long are compared to check that recovery and evaluation text are disjoint;
# shorter ones are headings ("= = Plot = =") that every article split shares.
OVERLAP_MIN_CHARS = 40
# Settings that change what is trained: a checkpoint resumes only a run that agrees on all.
_JOB_FIELDS = (
    "rank",
    "alpha",
    "dropout",
    "target_modules",
    "max_steps",
    "learning_rate",
    "lr_scheduler",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "batch_size",
    "gradient_accumulation_steps",
    "seq_len",
    "seed",
    "data",
    "data_config",
    "data_split",
    "text_column",
)


@dataclass
class RecoveryConfig:
    """What :func:`recover` does: the LoRA adapter, its training, data and checkpoints.

    Defaults are the usual LoRA recovery recipe scaled to a few minutes: rank 8,
    alpha 16, AdamW at 2e-4 with a cosine schedule, 200 steps of 8 x 128 tokens.
    """

    # LoRA
    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout, in [0, 1)."})
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Linear layers that get an adapter, by name (e.g. q_proj v_proj). Default: "
            "every linear projection the pruned model still has (not the LM head)."
        },
    )

    # optimization
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    lr_scheduler: Literal["cosine", "linear", "constant"] = field(
        default="cosine", metadata={"help": "Schedule after the warm-up."}
    )
    warmup_steps: int = field(default=10, metadata={"help": "Linear learning-rate warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this (0: no clipping)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per step and process."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated into one optimizer step."}
    )
    seq_len: int = field(
        default=128, metadata={"help": "Tokens per sequence, in training and evaluation."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of LoRA init, batches and dropout."})

    # data
    data: str | None = field(
        default=None,
        metadata={
            "help": "Recovery text: a UTF-8 text file, a folder from Dataset.save_to_disk, or a "
            "datasets name (default: the bundled calibration text, last 30% of WikiText-2 "
            "valid)."
        },
    )
    data_config: str | None = field(
        default=None, metadata={"help": "Config name of a datasets dataset."}
    )
    data_split: str = field(default="train", metadata={"help": "Split of a datasets dataset."})
    text_column: str = field(default="text", metadata={"help": "Text column of a dataset."})
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "Held-out text file for perplexity before/after (default: WikiText-2 test); "
            "must share no line with the recovery text."
        },
    )
    eval_chunks: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N chunks (default: all)."}
    )
    evaluate: bool = field(
        default=True, metadata={"help": "Measure held-out perplexity before and after."}
    )
    allow_overlap: bool = field(
        default=False,
        metadata={"help": "Accept recovery text that shares lines with the held-out text."},
    )

    # running
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for the recovered model and its checkpoint (None: no saving)."},
    )
    save_steps: int = field(
        default=50, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."}
    )
    resume: bool = field(
        default=True, metadata={"help": "Continue from output_dir's checkpoint if there is one."}
    )
    save_adapter: bool = field(
        default=True,
        metadata={"help": "Also save the unmerged adapter (output_dir/recovery_adapter)."},
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: a GPU if accelerate finds one, else the CPU."}
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "dtype of a model loaded from a folder (the adapter stays float32)."},
    )

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"RecoveryConfig.{name} {message}")

        for name, minimum in (
            ("rank", 1),
            ("max_steps", 1),
            ("batch_size", 1),
            ("gradient_accumulation_steps", 1),
            ("seq_len", 2),
            ("warmup_steps", 0),
            ("save_steps", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                fail(name, f"must be an integer >= {minimum}, got {value!r}")
        for name in ("alpha", "learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                fail(name, f"must be > 0, got {value!r}")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0:
                fail(name, f"must be >= 0, got {value!r}")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if self.eval_chunks is not None and (
            not isinstance(self.eval_chunks, int) or self.eval_chunks < 1
        ):
            fail("eval_chunks", f"must be an integer >= 1 or None, got {self.eval_chunks!r}")
        for name, allowed in (
            ("lr_scheduler", ("cosine", "linear", "constant")),
            ("device", ("auto", "cpu", "cuda")),
            ("dtype", ("float32", "bfloat16", "float16")),
        ):
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            self.target_modules = list(self.target_modules)
            if not self.target_modules or not all(
                isinstance(t, str) and t for t in self.target_modules
            ):
                fail("target_modules", f"must be non-empty names, got {self.target_modules!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RecoveryResult:
    """What :func:`recover` returns: the merged model and how the recovery went."""

    model: torch.nn.Module
    tokenizer: Any
    perplexity: dict[str, float]
    history: list[dict[str, float]]
    summary: dict[str, Any]
    output_dir: Path | None = None


# ------------------------------------------------------------------ data
def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith((".txt", ".md", ".json", ".jsonl"))


def load_recovery_text(config: RecoveryConfig) -> tuple[Any, str]:
    """The recovery data named by ``config.data`` and a one-line description of it."""
    if config.data is None:
        from hf_faithful.corpora import calibration_text

        return calibration_text(), BUNDLED_DATA
    path = Path(config.data).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8"), f"text file {path.name}"
    if path.is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys"):  # a DatasetDict
            if config.data_split not in dataset:
                raise ValueError(
                    f"RecoveryConfig.data_split {config.data_split!r} is not a split of "
                    f"{config.data} (splits: {list(dataset)})"
                )
            dataset = dataset[config.data_split]
        return _dataset_texts(dataset, config), f"dataset folder {path.name}"
    if _looks_local(config.data):
        raise FileNotFoundError(f"RecoveryConfig.data: no such file or folder: {config.data}")
    from datasets import load_dataset

    dataset = load_dataset(config.data, config.data_config, split=config.data_split)
    name = "/".join(x for x in (config.data, config.data_config) if x)
    return _dataset_texts(dataset, config), f"{name} ({config.data_split} split)"


def _dataset_texts(dataset, config: RecoveryConfig) -> list[str]:
    if config.text_column not in dataset.column_names:
        raise ValueError(
            f"RecoveryConfig.text_column {config.text_column!r} is not a column of the "
            f"dataset (columns: {dataset.column_names})"
        )
    return [t for t in dataset[config.text_column] if t]


def load_eval_text(config: RecoveryConfig) -> tuple[str, str]:
    """Held-out text (``config.eval_data`` or WikiText-2 test) and its description."""
    if config.eval_data is None:
        from hf_faithful.corpora import wikitext2_test

        return wikitext2_test(), BUNDLED_EVAL
    path = Path(config.eval_data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"RecoveryConfig.eval_data: no such file: {config.eval_data}")
    return path.read_text(encoding="utf-8"), f"text file {path.name}"


def _long_lines(text: Any) -> set[str]:
    texts = [text] if isinstance(text, str) else list(text)
    return {
        line.strip()
        for t in texts
        for line in t.splitlines()
        if len(line.strip()) >= OVERLAP_MIN_CHARS
    }


def shared_lines(train: Any, held_out: str) -> int | None:
    """Lines (of >= 40 characters) the recovery text shares with the held-out text;
    None when the recovery data is not text (token ids cannot be compared by line)."""
    if not (isinstance(train, str) or (isinstance(train, list | tuple) and train)):
        return None
    if not all(isinstance(t, str) for t in ([train] if isinstance(train, str) else train)):
        return None
    return len(_long_lines(train) & _long_lines(held_out))


# ----------------------------------------------------------------- model
def _load(model_or_folder, tokenizer, config: RecoveryConfig):
    """``(model, tokenizer, source folder or None)``."""
    if isinstance(model_or_folder, str | os.PathLike):
        from hf_faithful.models import load_causal_lm

        path = Path(model_or_folder).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model_or_folder: no such folder: {model_or_folder}")
        model, loaded_tokenizer = load_causal_lm(str(path), dtype=getattr(torch, config.dtype))
        return model, tokenizer or loaded_tokenizer, path
    if not isinstance(model_or_folder, torch.nn.Module) or not hasattr(model_or_folder, "config"):
        raise ValueError(
            "model_or_folder must be a pruned model folder or a transformers causal LM, got "
            f"{type(model_or_folder).__name__}"
        )
    source = Path(str(getattr(model_or_folder, "name_or_path", "") or ""))
    return model_or_folder, tokenizer, source if source.is_dir() and str(source) != "." else None


def target_module_names(model: torch.nn.Module, names: list[str] | None = None) -> list[str]:
    """Full names of the linear layers that get an adapter.

    Layers pruned to zero width (an attention that lost every head keeps a 0-input
    ``o_proj``, an MLP with no channel 0-width projections) are left out: an adapter
    on a zero-size matrix has nothing to learn. ``names`` matches a module's last name
    component (``q_proj``) or its full name.
    """
    head = model.get_output_embeddings()
    linears = [
        (full, module)
        for full, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    ]
    if names is not None:
        wanted = set(names)
        found = {full.rsplit(".", 1)[-1] for full, _ in linears} | {full for full, _ in linears}
        missing = sorted(wanted - found)
        if missing:
            available = sorted({full.rsplit(".", 1)[-1] for full, _ in linears})
            raise ValueError(
                f"RecoveryConfig.target_modules: no linear layer named {missing} "
                f"(the model has {available})"
            )
        linears = [(f, m) for f, m in linears if f in wanted or f.rsplit(".", 1)[-1] in wanted]
    chosen = [full for full, module in linears if module.weight.numel() > 0]
    if not chosen:
        raise ValueError("RecoveryConfig.target_modules: every matching linear layer has size 0")
    return chosen


def _require_peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - peft is in the dev extra
        raise ImportError(
            "recovery fine-tuning needs PEFT: pip install 'hf-faithful[peft]'"
        ) from err
    return peft


def _forward_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of one batch (a function so tests can interrupt a run)."""
    return model(input_ids=batch, labels=batch, use_cache=False).loss


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the dropout masks of ``step`` on process ``rank``: resuming replays them."""
    return (seed * 1_000_003 + step * 1_009 + rank) % (2**63)


def _batch(chunks: torch.Tensor, config: RecoveryConfig, micro: int, world: int, rank: int):
    """Rows of micro-batch ``micro`` for process ``rank``: a fixed function of (seed, micro)."""
    rows = config.batch_size * world
    per_epoch = chunks.shape[0] // rows
    epoch, index = divmod(micro, per_epoch)
    order = epoch_order(chunks.shape[0], config.seed, epoch)
    start = index * rows + rank * config.batch_size
    return chunks[order[start : start + config.batch_size]]


# ----------------------------------------------------------- checkpoints
def _fingerprint(
    config: RecoveryConfig, source: Path | None, chunks: torch.Tensor, world: int
) -> dict:
    """What a checkpoint must agree on to be resumed: settings, model, data, processes."""
    job = {name: getattr(config, name) for name in _JOB_FIELDS}
    digest = hashlib.sha256(chunks.cpu().numpy().tobytes()).hexdigest()[:16]
    job.update(
        model=str(source.resolve()) if source else None,
        data_sha256=digest,  # also catches train_data passed to recover()
        processes=world,
    )
    return job


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fingerprint: dict) -> dict[str, Any]:
    """A checkpoint written by the same job; another job's is refused, naming what differs."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    stored = state.get("fingerprint", {})
    changed = [
        f"{key}: {stored.get(key)!r} -> {fingerprint[key]!r}"
        for key in fingerprint
        if stored.get(key) != fingerprint[key]
    ]
    if changed:
        raise ValueError(
            f"{path} was written by a recovery run with other settings ({'; '.join(changed)}); "
            "run with the same settings to resume, or with resume=False (--no-resume) to start "
            "over"
        )
    return state


# ------------------------------------------------------------------ card
def _format_ppl(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "n/a"


def recovery_section(summary: dict[str, Any]) -> str:
    """The card's "Recovery fine-tuning" section (markdown) from the run summary."""
    s = summary
    overlap = s["shared_lines"]
    disjoint = (
        "not checked (the recovery data are token ids)"
        if overlap is None
        else f"disjoint: {overlap} shared lines of >= {OVERLAP_MIN_CHARS} characters"
    )
    tokens = s["steps"] * s["tokens_per_step"]
    losses = s.get("train_loss") or {}
    rows = [
        ("recovery data", f"{s['data']}: {s['train_chunks']:,} chunks of {s['seq_len']} tokens"),
        ("held-out evaluation", f"{s['eval_data']} ({disjoint})"),
        (
            "steps",
            f"{s['steps']} x {s['tokens_per_step']:,} tokens = {tokens:,} tokens (batch "
            f"{s['batch_size']} x {s['gradient_accumulation_steps']} accumulation x "
            f"{s['processes']} process(es))",
        ),
        (
            "LoRA",
            f"rank {s['rank']}, alpha {s['alpha']:g}, dropout {s['dropout']:g}, on "
            f"{s['adapted_modules']} linear layers ({', '.join(s['module_kinds'])})",
        ),
        (
            "optimizer",
            f"AdamW, lr {s['learning_rate']:g}, {s['lr_scheduler']} schedule, "
            f"{s['warmup_steps']} warm-up steps, weight decay {s['weight_decay']:g}, "
            f"gradient clipping {s['max_grad_norm']:g}",
        ),
    ]
    if losses:
        rows.append(
            ("training loss", f"{losses['first']:.4f} (first steps) -> {losses['last']:.4f} (last)")
        )
    ppl = s.get("perplexity") or {}
    if ppl:
        chunks = f", first {s['eval_chunks']} chunks" if s.get("eval_chunks") else ""
        rows.append(
            (
                f"held-out perplexity ({s['seq_len']}-token chunks{chunks})",
                f"{_format_ppl(ppl.get('before'))} before recovery -> "
                f"{_format_ppl(ppl.get('after'))} after",
            )
        )
    rows.append(("time", f"{s['train_seconds']:.0f} s of training on {s['device']}"))
    rows.append(("seed", str(s["seed"])))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"{SECTION_HEADING}\n\n"
        "After pruning, the model was fine-tuned with a LoRA adapter "
        "([PEFT](https://github.com/huggingface/peft)) and the adapter was merged into the "
        "weights (`merge_and_unload`): this folder is again a plain pruned model with the same "
        "per-layer sizes and the same modeling file.\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        f"`{LOG_FILE}` holds the settings and the training loss of every step"
        + (f"; `{ADAPTER_DIR}/` the unmerged adapter." if s.get("adapter_saved") else ".")
        + "\n"
    )


def _with_section(text: str, section: str) -> str:
    """``text`` with its recovery section replaced, or the section put before "## Usage"."""
    pattern = re.compile(rf"^{re.escape(SECTION_HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    usage = re.search(r"^## Usage", text, re.M)
    if usage:
        return text[: usage.start()] + section + "\n" + text[usage.start() :]
    return text.rstrip() + "\n\n" + section


def recovery_card(model, summary: dict[str, Any], source: Path | None):
    """The input folder's card (or a new one) with the recovery section and metadata."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    readme = source / "README.md" if source else None
    if readme is not None and readme.is_file():
        card = ModelCard.load(readme)
    else:
        name = getattr(model.config, "_name_or_path", "") or "pruned-model"
        data = ModelCardData(library_name="transformers", pipeline_tag="text-generation")
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {Path(name).name}\n")
    tags = list(card.data.tags or [])
    for tag in ("lora-recovery", "hf-faithful"):
        if tag not in tags:
            tags.append(tag)
    card.data.tags = tags
    after = (summary.get("perplexity") or {}).get("after")
    card.data.eval_results = None  # they measured the weights before recovery
    if after is not None:
        card.data.model_name = card.data.model_name or "recovered-model"
        bundled = summary["eval_data"] == BUNDLED_EVAL
        card.data.eval_results = [
            EvalResult(
                task_type="text-generation",
                dataset_type="wikitext" if bundled else "text",
                dataset_name=f"WikiText-2 (test, {summary['seq_len']}-token chunks)"
                if bundled
                else summary["eval_data"],
                dataset_config="wikitext-2-v1" if bundled else None,
                dataset_split="test" if bundled else None,
                metric_type="perplexity",
                metric_value=round(float(after), 4),
            )
        ]
    return ModelCard(
        f"---\n{card.data.to_yaml()}\n---\n{_with_section(card.text, recovery_section(summary))}"
    )


# -------------------------------------------------------------- recover
def recover(
    model_or_folder: str | os.PathLike | torch.nn.Module,
    config: RecoveryConfig | None = None,
    *,
    tokenizer=None,
    train_data=None,
    eval_data=None,
    progress: bool = True,
) -> RecoveryResult:
    """Fine-tune a pruned model with LoRA, merge the adapter, and save it if asked.

    ``model_or_folder`` is a folder saved by ``PolicyGradientPruner.save_pretrained``
    (or any causal-LM folder), or a loaded model, which is then modified in place
    (the adapter is merged into it). ``train_data`` (texts, a ``datasets.Dataset`` or
    token ids) and ``eval_data`` (text) replace ``config.data`` / ``config.eval_data``.
    With ``config.output_dir`` the merged model, tokenizer, prune state, card and
    ``recovery.json`` are written there, and checkpoints go there while training.
    """
    from accelerate import Accelerator

    config = config if config is not None else RecoveryConfig()
    if not isinstance(config, RecoveryConfig):
        raise ValueError(f"config must be a RecoveryConfig, got {type(config).__name__}")
    peft = _require_peft()
    model, tokenizer, source = _load(model_or_folder, tokenizer, config)
    out = Path(config.output_dir).expanduser() if config.output_dir else None
    if out is not None and source is not None and out.resolve() == source.resolve():
        raise ValueError(
            f"RecoveryConfig.output_dir must differ from the pruned folder ({source}): "
            "resuming reads the pruned weights from it"
        )
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("RecoveryConfig.device is 'cuda' but no CUDA device is available")

    targets = target_module_names(model, config.target_modules)  # before any slow work

    # data: recovery text and held-out text must be disjoint
    if train_data is None:
        train_data, data_desc = load_recovery_text(config)
    else:
        data_desc = "data passed to recover()"
    if tokenizer is None and not torch.is_tensor(train_data):
        raise ValueError("tokenizer is required when model_or_folder is a model and data are text")
    chunks = token_chunks(train_data, tokenizer, config.seq_len)
    eval_ids, eval_desc, overlap = None, None, None
    if config.evaluate or eval_data is not None:
        from hf_faithful.evaluation.perplexity import tokenize_text

        if eval_data is None:
            eval_text, eval_desc = load_eval_text(config)
        else:
            eval_text, eval_desc = eval_data, "text passed to recover()"
        overlap = shared_lines(train_data, eval_text)
        if overlap and not config.allow_overlap:
            raise ValueError(
                f"the recovery data share {overlap} lines with the held-out text ({eval_desc}); "
                "choose disjoint data (RecoveryConfig.data / eval_data) or set allow_overlap"
            )
        if tokenizer is None:
            raise ValueError("tokenizer is required to evaluate on text")
        eval_ids = tokenize_text(tokenizer, eval_text)

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=config.device == "cpu",
    )
    world, rank, main = (
        accelerator.num_processes,
        accelerator.process_index,
        accelerator.is_main_process,
    )
    if chunks.shape[0] < config.batch_size * world:
        raise ValueError(
            f"RecoveryConfig.batch_size: the recovery data have {chunks.shape[0]} chunks of "
            f"{config.seq_len} tokens, fewer than one batch ({config.batch_size} x {world} "
            "process(es))"
        )
    device = accelerator.device
    model.to(device)
    fingerprint = _fingerprint(config, source, chunks, world)
    checkpoint = out / CHECKPOINT_FILE if out is not None else None
    state = None
    if checkpoint is not None and checkpoint.is_file() and config.resume:
        state = load_checkpoint(checkpoint, fingerprint)

    def held_out_ppl(m) -> float:
        from hf_faithful.evaluation.perplexity import perplexity

        return perplexity(
            m,
            input_ids=eval_ids,
            seq_len=config.seq_len,
            max_chunks=config.eval_chunks,
            device=device,
            progress=False,
        )

    ppl: dict[str, float] = {}
    if state is not None and state.get("perplexity_before") is not None:
        ppl["before"] = float(state["perplexity_before"])
    elif eval_ids is not None and main:
        ppl["before"] = held_out_ppl(model)

    # the adapter
    torch.manual_seed(config.seed)
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = peft.get_peft_model(model, lora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler,
        optimizer,
        num_warmup_steps=min(config.warmup_steps, config.max_steps),
        num_training_steps=config.max_steps,
    )
    step, history, train_seconds = 0, [], 0.0
    if state is not None:
        peft.set_peft_model_state_dict(peft_model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state["history"])
        train_seconds = float(state.get("train_seconds", 0.0))
    wrapped, optimizer = accelerator.prepare(peft_model, optimizer)

    def write_checkpoint() -> None:
        adapter = peft.get_peft_model_state_dict(accelerator.unwrap_model(wrapped))
        save_checkpoint(
            checkpoint,
            {
                "fingerprint": fingerprint,
                "step": step,
                "adapter": {k: v.detach().cpu() for k, v in adapter.items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "perplexity_before": ppl.get("before"),
                "train_seconds": train_seconds,
            },
        )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(
        total=config.max_steps, initial=step, desc="recovery", disable=not progress or not main
    )
    wrapped.train()
    ga = config.gradient_accumulation_steps
    try:
        while step < config.max_steps:
            started = time.perf_counter()
            torch.manual_seed(_step_seed(config.seed, step, rank))
            total = torch.zeros((), device=device)
            for j in range(ga):
                batch = _batch(chunks, config, step * ga + j, world, rank).to(device)
                with accelerator.accumulate(wrapped):
                    loss = _forward_loss(wrapped, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                total += loss.detach() / ga
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            mean_loss = float(accelerator.reduce(total, reduction="mean"))
            train_seconds += time.perf_counter() - started
            history.append({"step": step, "loss": mean_loss, "lr": lr})
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            if checkpoint is not None and config.save_steps and step % config.save_steps == 0:
                if main:
                    write_checkpoint()
                accelerator.wait_for_everyone()
    finally:
        bar.close()
    if checkpoint is not None and main and config.save_steps and step % config.save_steps:
        write_checkpoint()  # a crash while saving below costs no training
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

    peft_model = accelerator.unwrap_model(wrapped)
    peft_model.eval()
    adapter_saved = out is not None and config.save_adapter
    if adapter_saved and main:  # before merging removes it
        peft_model.save_pretrained(str(out / ADAPTER_DIR))
    merged = peft_model.merge_and_unload()
    merged.eval()
    if eval_ids is not None and main:
        ppl["after"] = held_out_ppl(merged)

    summary = _summary(
        config,
        merged,
        targets,
        history,
        ppl,
        data=data_desc,
        eval_data=eval_desc,
        overlap=overlap,
        chunks=chunks.shape[0],
        world=world,
        device=str(device),
        train_seconds=train_seconds,
        peak_mb=peak_mb,
        adapter_saved=adapter_saved,
    )
    if out is not None and main:
        _write_folder(out, merged, tokenizer, source, summary, history)
        if checkpoint.is_file():
            checkpoint.unlink()  # the saved model supersedes it
    accelerator.wait_for_everyone()
    return RecoveryResult(
        model=merged,
        tokenizer=tokenizer,
        perplexity=ppl,
        history=history,
        summary=summary,
        output_dir=out,
    )


def _summary(config, merged, targets, history, ppl, **info) -> dict[str, Any]:
    world = info["world"]
    first = history[: max(1, min(10, len(history) // 5))]
    last = history[-len(first) :]
    summary: dict[str, Any] = {
        "method": "LoRA (PEFT), merged with merge_and_unload",
        "data": info["data"],
        "eval_data": info["eval_data"],
        "shared_lines": info["overlap"],
        "train_chunks": info["chunks"],
        "steps": len(history) and history[-1]["step"],
        "tokens_per_step": config.batch_size
        * config.gradient_accumulation_steps
        * world
        * config.seq_len,
        "processes": world,
        "adapted_modules": len(targets),
        "module_kinds": sorted({t.rsplit(".", 1)[-1] for t in targets}),
        "train_loss": {
            "first": sum(h["loss"] for h in first) / len(first),
            "last": sum(h["loss"] for h in last) / len(last),
        }
        if history
        else None,
        "perplexity": dict(ppl) or None,
        "eval_chunks": config.eval_chunks,
        "device": info["device"],
        "train_seconds": round(info["train_seconds"], 2),
        "peak_memory_mb": round(info["peak_mb"], 1) if info["peak_mb"] is not None else None,
        "adapter_saved": info["adapter_saved"],
        "library": "hf-faithful",
    }
    for name in (
        "rank",
        "alpha",
        "dropout",
        "learning_rate",
        "lr_scheduler",
        "warmup_steps",
        "weight_decay",
        "max_grad_norm",
        "batch_size",
        "gradient_accumulation_steps",
        "seq_len",
        "seed",
    ):
        summary[name] = getattr(config, name)
    return summary


def _write_folder(out: Path, merged, tokenizer, source, summary, history) -> None:
    """Merged model, tokenizer, prune state, card and log."""
    pruning = getattr(merged.config, "pruning", None)
    if isinstance(pruning, dict):  # provenance travels in config.json, as pruning's does
        keep = ("method", "steps", "rank", "alpha", "learning_rate", "data", "perplexity")
        merged.config.pruning = {**pruning, "recovery": {k: summary[k] for k in keep}}
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if source is not None:
        from hf_faithful.pruning.state import STATE_FILE

        if (source / STATE_FILE).is_file() and not (out / STATE_FILE).exists():
            shutil.copy2(source / STATE_FILE, out / STATE_FILE)
    log = {"summary": summary, "history": history}
    tmp = out / (LOG_FILE + ".tmp")
    tmp.write_text(json.dumps(log, indent=1) + "\n")
    os.replace(tmp, out / LOG_FILE)
    recovery_card(merged, summary, source).save(out / "README.md")
