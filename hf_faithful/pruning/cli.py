"""`hf-faithful prune`: policy-gradient structural pruning from the command line.

With no model and no data it prunes the bundled reference model on the bundled
calibration text (the last 30% of WikiText-2 valid) and reports WikiText-2 test
perplexity before and after, with the paper's 128-token protocol.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_faithful.cli_utils import add_dataclass_arguments, dataclass_from_args
from hf_faithful.pruning.config import PruningConfig

# PruningConfig fields per help section; whatever is not listed lands in the last one.
_SECTIONS = {
    "what and how much to prune": ("sparsity", "target", "budget", "min_heads_per_layer"),
    "optimization": (
        "num_samples",
        "max_steps",
        "batch_size",
        "seq_len",
        "learning_rate",
        "lr_scheduler",
        "estimator",
        "baseline_window",
        "entropy_weight",
        "sparsity_warmup_steps",
        "init",
        "init_transform",
        "init_state_path",
        "init_num_samples",
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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune",
        help="prune attention heads and MLP channels with forward passes only",
        description=(
            "Policy-gradient structural pruning (arXiv 2406.10576). Learns which KV-head groups "
            "and MLP channels to remove with forward passes only, then saves a genuinely "
            "smaller model that reloads with AutoModelForCausalLM.from_pretrained. Without "
            "MODEL and --calibration it prunes the bundled reference model on bundled text. "
            "Every PruningConfig field is an option (--field-name)."
        ),
    )
    p.add_argument(
        "model", nargs="?", default=None, help="model folder or Hub id (default: reference model)"
    )
    p.add_argument(
        "--calibration", type=Path, default=None, help="UTF-8 text file (default: bundled text)"
    )
    p.add_argument(
        "--output", type=Path, required=True, help="folder for the pruned model and checkpoints"
    )
    p.add_argument(
        "--push-to-hub", metavar="REPO", default=None, help="also upload to this Hub repo"
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
        default=None,
        help="cap the before/after evaluation (default: all)",
    )

    g = p.add_argument_group("loading")
    g.add_argument("--device", default=None)
    g.add_argument(
        "--device-map", default=None, help='e.g. "auto" for models larger than one device'
    )
    g.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    g.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> PruningConfig:
    return dataclass_from_args(
        PruningConfig,
        args,
        output_dir=str(args.output),
        extra={"base_model": args.model or "hf-faithful reference model"},
    )


def _check_architecture(model: str, trust_remote_code: bool) -> None:
    """Refuse an architecture that compression cannot handle from its config alone,
    before minutes of loading weights; a config that cannot be read is left to the
    loader's error (the pruner checks the loaded model again)."""
    from transformers import AutoConfig

    from hf_faithful.pruning.compress import check_compressible

    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file():
        return  # load_causal_lm names the missing folder or config.json
    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - load_causal_lm reports it with its own message
        return
    check_compressible(config)


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from hf_faithful.corpora import calibration_text, wikitext2_test
    from hf_faithful.evaluation.perplexity import perplexity, tokenize_text
    from hf_faithful.models import load_causal_lm
    from hf_faithful.pruning.pruner import CHECKPOINT_FILE, PolicyGradientPruner

    config = _config(args)  # bad settings fail before anything is loaded
    for name in ("eval_chunks", "final_eval_chunks"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.calibration is not None and not args.calibration.is_file():
        raise FileNotFoundError(f"--calibration file not found: {args.calibration}")
    checkpoint = args.output / CHECKPOINT_FILE
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    calibration = (
        args.calibration.read_text(encoding="utf-8") if args.calibration else calibration_text()
    )

    if args.model is not None:  # the bundled reference model is a Llama
        _check_architecture(args.model, args.trust_remote_code)

    state = PartialState()
    main = state.is_main_process
    device = args.device or (str(state.device) if state.num_processes > 1 else None)
    model, tokenizer = load_causal_lm(
        args.model,
        dtype=getattr(torch, args.dtype),
        device=device if args.device_map is None else None,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )
    pruner = PolicyGradientPruner(model, tokenizer, config)
    chunks = pruner.prepare_data(calibration)  # too little text fails before any evaluation
    test_ids = tokenize_text(tokenizer, wikitext2_test())
    eval_ids = test_ids[: args.eval_chunks * config.seq_len]
    if args.final_eval_chunks is not None:
        test_ids = test_ids[: args.final_eval_chunks * config.seq_len]
    say = print if main else (lambda *a, **k: None)

    ppl: dict[str, float] = {}
    if not args.no_final_eval and main and not args.resume:
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
        say(f"WikiText-2 test perplexity: {before}{ppl['after']:.3f}")
    say(f"saved to {args.output}")
    if args.push_to_hub:
        url = pruner.push_to_hub(
            args.push_to_hub, perplexity=ppl or None, private=args.private or None
        )
        say(f"pushed to {url}")
    return 0
