"""`hf-faithful recover`: LoRA recovery fine-tuning of a pruned folder, merged back.

Every :class:`~hf_faithful.pruning.recover.RecoveryConfig` field is an option; the
defaults live in the config. Running the same command again resumes from
``OUTPUT/recovery_checkpoint.pt``. Under ``accelerate launch -m hf_faithful.cli recover
...`` the processes split every batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_faithful.cli_utils import add_dataclass_arguments, dataclass_from_args
from hf_faithful.pruning.recover import RecoveryConfig

_SECTIONS = {
    "LoRA adapter": ("rank", "alpha", "dropout", "target_modules"),
    "optimization": (
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
    ),
    "data and evaluation": (
        "data",
        "data_config",
        "data_split",
        "text_column",
        "eval_data",
        "eval_chunks",
        "evaluate",
        "allow_overlap",
    ),
}
_ALIASES = {"max_steps": ["--steps"], "learning_rate": ["--lr"]}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recover",
        help="recover a pruned model's quality with LoRA, merged into its weights",
        description=(
            "Fine-tune a pruned folder (hf-faithful prune --output ...) with a LoRA adapter on "
            "recovery text, merge the adapter into the weights and save a pruned folder of the "
            "same format, with held-out perplexity before/after on its card. Defaults: the "
            "bundled calibration text (last 30% of WikiText-2 valid) for training, WikiText-2 "
            "test for evaluation. Rerunning the same command resumes from its checkpoint."
        ),
    )
    p.add_argument("pruned_folder", type=Path, help="folder saved by `hf-faithful prune`")
    p.add_argument("--output", type=Path, required=True, help="folder for the recovered model")
    p.add_argument(
        "--push-to-hub", metavar="REPO", default=None, help="also upload to this Hub repo"
    )
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    listed = [name for names in _SECTIONS.values() for name in names]
    for title, names in _SECTIONS.items():
        add_dataclass_arguments(
            p.add_argument_group(title), RecoveryConfig, include=names, aliases=_ALIASES
        )
    add_dataclass_arguments(  # fields added to RecoveryConfig later still get an option
        p.add_argument_group("running"),
        RecoveryConfig,
        exclude=[*listed, "output_dir"],
        aliases=_ALIASES,
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_faithful.pruning.recover import recover

    config = dataclass_from_args(RecoveryConfig, args, output_dir=str(args.output))
    if not args.pruned_folder.is_dir():
        raise FileNotFoundError(f"PRUNED_FOLDER: no such folder: {args.pruned_folder}")
    result = recover(args.pruned_folder, config, progress=not args.quiet)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    ppl = result.perplexity
    if ppl:
        before = f"{ppl['before']:.3f} -> " if "before" in ppl else ""
        where = result.summary["eval_data"]
        print(f"held-out perplexity ({where}): {before}{ppl.get('after', float('nan')):.3f}")
    losses = result.summary.get("train_loss")
    if losses:
        print(f"training loss: {losses['first']:.4f} -> {losses['last']:.4f}")
    print(f"saved to {args.output}")
    if args.push_to_hub:
        from hf_faithful.hub import push_folder

        url = push_folder(
            args.output,
            args.push_to_hub,
            private=args.private or None,
            commit_message="Upload recovered pruned model (hf-faithful)",
        )
        print(f"pushed to {url}")
    return 0
