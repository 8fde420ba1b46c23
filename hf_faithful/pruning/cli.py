"""`hf-faithful prune`: policy-gradient structural pruning and the one-shot baselines
(FLAP, Wanda-sp, magnitude, random) from the command line.

With no model and no data it prunes the bundled reference model on the bundled
calibration text (the last 30% of WikiText-2 valid) and reports WikiText-2 test
perplexity before and after, with the paper's 128-token protocol, on the first
``--final-eval-chunks`` chunks. A model may be a folder, a Hub id or a ``.gguf`` file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from hf_faithful.cli_utils import add_dataclass_arguments, dataclass_from_args
from hf_faithful.pruning.config import METHODS, PRESETS, PruningConfig, method_values

# PruningConfig fields per help section; whatever is not listed lands in the last one.
_SECTIONS = {
    "what and how much to prune": (
        "sparsity",
        "target",
        "budget",
        "allocation",
        "compensate",
        "min_heads_per_layer",
    ),
    "optimization": (
        "num_samples",
        "max_steps",
        "batch_size",
        "seq_len",
        "learning_rate",
        "optimizer",
        "weight_decay",
        "lr_scheduler",
        "estimator",
        "baseline_window",
        "entropy_weight",
        "sparsity_warmup_steps",
        "init",
        "init_transform",
        "init_scale",
        "init_state_path",
        "init_num_samples",
        "sequential_stats",
        "seed",
    ),
    "monitoring": ("eval_steps", "save_steps", "logging_steps"),
}
_FROM_OTHER_OPTIONS = ("output_dir", "extra")  # set from --output and MODEL
_ALIASES = {
    "max_steps": ["--steps"],
    "learning_rate": ["--lr"],
    "init_state_path": ["--init-state"],
}
_CLI_DEFAULTS = {"eval_steps": 100, "save_steps": 100}  # a CLI run monitors and checkpoints
_FINAL_EVAL_CHUNKS = 128  # before/after perplexity: a bounded slice unless asked for more
_EXPLICIT = "_explicit_options"  # namespace attribute: config fields given on the command line
_TRACKED: dict[type, type] = {}


def _track_explicit(action: argparse.Action) -> None:
    """Make ``action`` record its dest in the namespace when given on the command line,
    so that ``--method`` / ``--preset`` fill only the fields the user left alone."""
    base = type(action)
    if base not in _TRACKED:

        def __call__(self, parser, namespace, values, option_string=None):
            explicit = set(getattr(namespace, _EXPLICIT, None) or ())
            setattr(namespace, _EXPLICIT, explicit | {self.dest})
            base.__call__(self, parser, namespace, values, option_string)

        _TRACKED[base] = type(f"Explicit{base.__name__}", (base,), {"__call__": __call__})
    action.__class__ = _TRACKED[base]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune",
        help="prune attention heads and MLP channels with forward passes only",
        description=(
            "Policy-gradient structural pruning (arXiv 2406.10576), or a one-shot baseline "
            "(--method flap, wanda-sp, ...). Learns which KV-head groups and MLP channels to "
            "remove with forward passes only, then saves a genuinely smaller model that "
            "reloads with AutoModelForCausalLM.from_pretrained. Without "
            "MODEL and --calibration it prunes the bundled reference model on bundled text. "
            "Every PruningConfig field is an option (--field-name)."
        ),
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="model folder, Hub id or .gguf file (default: the bundled reference model)",
    )
    p.add_argument(
        "--method",
        default="pg",
        choices=tuple(METHODS),
        help="pg: policy gradient (default); one-shot baselines: flap (FLAP: fluctuation "
        "metric, cost-aware global allocation, bias compensation), wanda-sp (per-layer, "
        "sequential statistics, as published), wanda-sp-global (our global variant), "
        "magnitude, random. Options given explicitly override what a method sets.",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=tuple(PRESETS),
        help="paper: the released PG scripts' settings (Adam lr 2e-3, betas 0.5/0.999, "
        "weight decay 1e-4, 15000 steps, batch 8, K 2, window 5, global mask, Wanda-sp "
        "init); their Llama-3-8B run used --lr 6e-3. Explicit options win.",
    )
    p.add_argument(
        "--calibration", type=Path, default=None, help="UTF-8 text file (default: bundled text)"
    )
    p.add_argument(
        "--output", type=Path, required=True, help="folder for the pruned model and checkpoints"
    )
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="also upload to this Hub repo (repo id, token and online mode are checked "
        "before pruning starts)",
    )
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT/checkpoint.safetensors"
    )

    listed = [name for names in _SECTIONS.values() for name in names]
    groups = {title: p.add_argument_group(title) for title in _SECTIONS}
    for title, names in _SECTIONS.items():
        add_dataclass_arguments(
            groups[title], PruningConfig, include=names, aliases=_ALIASES, defaults=_CLI_DEFAULTS
        )
    add_dataclass_arguments(  # fields added to PruningConfig later still get an option
        groups["monitoring"],
        PruningConfig,
        exclude=[*listed, *_FROM_OTHER_OPTIONS],
        aliases=_ALIASES,
        defaults=_CLI_DEFAULTS,
    )

    g = groups["monitoring"]
    g.add_argument(
        "--eval-chunks", type=int, default=40, help="WikiText-2 test chunks per periodic evaluation"
    )
    g.add_argument("--no-final-eval", action="store_true", help="skip perplexity before/after")
    g.add_argument(
        "--final-eval-chunks",
        type=int,
        default=_FINAL_EVAL_CHUNKS,
        help="WikiText-2 test chunks of the before/after perplexity: the first N, so a short "
        "run is not dominated by two full passes; 0: the whole test set (default: %(default)s)",
    )

    g = p.add_argument_group("loading")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument(
        "--device-map", default=None, help='e.g. "auto" for models larger than one device'
    )
    g.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 on a GPU (as the released code), float32 on the CPU",
    )
    g.add_argument("--trust-remote-code", action="store_true")
    fields = set(PruningConfig.__dataclass_fields__)
    for action in p._actions:
        if action.dest in fields:
            _track_explicit(action)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> PruningConfig:
    """The config of ``--method`` / ``--preset`` with the explicitly given options on top."""
    explicit = getattr(args, _EXPLICIT, None) or set()
    given = {name: getattr(args, name) for name in explicit}
    values = method_values(args.method, args.preset, given)
    return dataclass_from_args(
        PruningConfig,
        args,
        **values,
        output_dir=str(args.output),
        extra={"base_model": args.model or "hf-faithful reference model", **(extra or {})},
    )


def resolve_device_dtype(device: str | None, dtype: str, *, cuda: bool | None = None):
    """``(device, torch dtype)``: CUDA when there is one and no device is named, and
    bfloat16 on a GPU for ``dtype="auto"`` (the released code prunes in bf16); the CPU
    stays float32, where bf16 matmuls are slow and the benchmarks were measured."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = device or ("cuda" if cuda else "cpu")
    if dtype == "auto":
        return device, torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, getattr(torch, dtype)


def check_push_ready(repo_id: str) -> None:
    """Refuse ``--push-to-hub`` before any pruning when the upload cannot work: a repo id
    the Hub rejects, offline mode (HF_HUB_OFFLINE), or no token. The folder would still
    be saved, but an hour of pruning should not end in an OfflineModeIsEnabled traceback."""
    from huggingface_hub import constants, get_token

    from hf_faithful.hub import REPO_ID_PATTERN

    if not REPO_ID_PATTERN.match(repo_id or ""):
        raise ValueError(f"--push-to-hub: repo id must look like 'user/name', got {repo_id!r}")
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if offline or constants.is_offline_mode():
        raise ValueError(
            "--push-to-hub: the Hub is in offline mode (HF_HUB_OFFLINE is set); unset it or "
            "drop --push-to-hub and upload the saved folder later"
        )
    if not get_token():
        raise ValueError(
            "--push-to-hub: no Hugging Face token; run `hf auth login` or set HF_TOKEN"
        )


def _check_architecture(model: str, trust_remote_code: bool) -> None:
    """Refuse an architecture that compression cannot handle from its config alone,
    before minutes of loading weights; a config that cannot be read is left to the
    loader's error (the pruner checks the loaded model again)."""
    from transformers import AutoConfig

    from hf_faithful.pruning.compress import check_compressible

    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists()
    gguf = path.suffix.lower() == ".gguf"
    if looks_local and not gguf and not (path / "config.json").is_file():
        return  # load_causal_lm names the missing folder or config.json
    try:
        if gguf:  # metadata only: the tensors are read (and dequantized) by the loader
            config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - load_causal_lm reports it with its own message
        return
    check_compressible(config)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from hf_faithful.corpora import calibration_text, wikitext2_test
    from hf_faithful.evaluation.perplexity import perplexity, tokenize_text
    from hf_faithful.models import load_causal_lm
    from hf_faithful.pruning.pruner import CHECKPOINT_FILE, PolicyGradientPruner

    calibration_name = (
        str(args.calibration)
        if args.calibration
        else "bundled: last 30% of WikiText-2 valid (tokenized WikiText-2, not raw; the "
        "papers calibrate on C4, FLAP on WikiText-2 train)"
    )
    config = _config(args, {"calibration": calibration_name})  # bad settings fail early
    for name in ("eval_chunks", "final_eval_chunks"):
        value = getattr(args, name)
        minimum = 0 if name == "final_eval_chunks" else 1
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")
    if args.calibration is not None and not args.calibration.is_file():
        raise FileNotFoundError(f"--calibration file not found: {args.calibration}")
    checkpoint = args.output / CHECKPOINT_FILE
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    if args.push_to_hub:
        check_push_ready(args.push_to_hub)
    calibration = (
        args.calibration.read_text(encoding="utf-8") if args.calibration else calibration_text()
    )

    if args.model is not None:  # the bundled reference model is a Llama
        _check_architecture(args.model, args.trust_remote_code)

    state = PartialState()
    main = state.is_main_process
    requested = args.device or (str(state.device) if state.num_processes > 1 else None)
    device, dtype = resolve_device_dtype(requested, args.dtype)
    model, tokenizer = load_causal_lm(
        args.model,
        dtype=dtype,
        device=device if args.device_map is None else None,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )
    pruner = PolicyGradientPruner(model, tokenizer, config)
    chunks = pruner.prepare_data(calibration)  # too little text fails before any evaluation
    test_ids = tokenize_text(tokenizer, wikitext2_test())
    eval_ids = test_ids[: args.eval_chunks * config.seq_len]
    total_chunks = test_ids.numel() // config.seq_len
    used = min(args.final_eval_chunks or total_chunks, total_chunks)
    test_ids = test_ids[: used * config.seq_len]
    slice_note = (
        "the whole test set"
        if used == total_chunks
        else f"first {used} of {total_chunks} chunks; --final-eval-chunks 0 for all"
    )
    config.extra["evaluation"] = f"WikiText-2 test, {config.seq_len}-token chunks, {slice_note}"
    say = print if main else (lambda *a, **k: None)
    say(f"method: {pruner.provenance()['method']}; device {device}, {str(dtype)[6:]}")

    ppl: dict[str, float] = {}
    if not args.no_final_eval and main and not args.resume:
        say(f"evaluating the dense model on WikiText-2 test ({slice_note}; --no-final-eval skips)")
        ppl["before"] = perplexity(
            model, input_ids=test_ids, seq_len=config.seq_len, device=pruner.device
        )
        say(f"dense model: WikiText-2 test perplexity {ppl['before']:.3f}")
    pruner.fit(
        chunks,
        eval_data=eval_ids if args.eval_steps else None,
        resume_from_checkpoint=checkpoint if args.resume else None,
    )
    if not main:
        return 0
    compressed = pruner.compress()
    if not args.no_final_eval:
        ppl["after"] = perplexity(
            compressed, input_ids=test_ids, seq_len=config.seq_len, device=pruner.device
        )
    pruner.save_pretrained(args.output, perplexity=ppl or None, compressed=compressed)
    if checkpoint.is_file():
        checkpoint.unlink()  # the saved prune state supersedes it
    sizes = pruner.layer_sizes()
    dense = sum(p.numel() for p in model.parameters())
    pruned = sum(p.numel() for p in compressed.parameters())
    say(f"kept KV heads per layer: {sizes['num_key_value_heads']}")
    say(f"kept MLP channels per layer: {sizes['intermediate_size']}")
    say(f"parameters: {dense:,} -> {pruned:,} ({pruned / dense:.1%})")
    if "after" in ppl:
        before = f"{ppl['before']:.3f} -> " if "before" in ppl else ""
        say(f"WikiText-2 test perplexity ({slice_note}): {before}{ppl['after']:.3f}")
    say(f"saved to {args.output}")
    if args.push_to_hub:
        url = pruner.push_to_hub(
            args.push_to_hub, perplexity=ppl or None, private=args.private or None
        )
        say(f"pushed to {url}")
    return 0
