"""PruningConfig: every knob of policy-gradient structural pruning (arXiv 2406.10576).

Defaults follow the released scripts where they exist (K=2 samples, square-root
estimator, baseline window 5, cosine learning rate, sigmap init from Wanda-sp) and
are tuned for the bundled reference model elsewhere (learning rate, steps). Fields
follow TRL's idiom (``field(default=..., metadata={"help": ...})``): the ``prune``
command builds its options from them, so defaults live here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

TARGETS = ("heads", "channels", "both")
BUDGETS = ("global", "layer")
INITS = ("wanda_sp", "flap", "magnitude", "random", "constant", "state")
TRANSFORMS = ("sigmap", "norm")
ESTIMATORS = ("sqrt", "reinforce")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class PruningConfig:
    """Configuration of [`PolicyGradientPruner`].

    Sparsity is the fraction of *units* removed from each pool (KV-head groups of all
    layers form one pool, MLP channels another), as in the paper.
    """

    # what and how much to prune
    sparsity: float = field(
        default=0.5, metadata={"help": "Fraction of units to remove, in [0, 1)."}
    )
    target: Literal["heads", "channels", "both"] = field(
        default="both",
        metadata={"help": "What to prune: attention KV-head groups, MLP channels, or both."},
    )
    budget: Literal["global", "layer"] = field(
        default="global",
        metadata={
            "help": "global: one budget per pool, layers end up heterogeneous; layer: every "
            "layer keeps the same fraction."
        },
    )
    min_heads_per_layer: int = field(
        default=0,
        metadata={
            "help": "Every layer keeps at least this many KV-head groups. With 0 (the paper's "
            "setting) a layer may lose all its heads and its attention is removed entirely; "
            "with more, samples that keep too few get the layer's most probable heads added."
        },
    )

    # optimization
    num_samples: int = field(
        default=2, metadata={"help": "K: masks drawn (and forward passes run) per step."}
    )
    max_steps: int = field(
        default=300,
        metadata={
            "help": "Policy-gradient steps (0: only the initialization, a one-shot pruner). "
            "300: best of 100/300/500 on the reference model at 50% (benchmarks/RESULTS.md)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Calibration sequences per step."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per calibration sequence."})
    learning_rate: float = field(default=0.05, metadata={"help": "SGD step on the scores."})
    lr_scheduler: Literal["cosine", "linear", "constant"] = field(
        default="cosine", metadata={"help": "Learning-rate schedule over max_steps."}
    )
    estimator: Literal["sqrt", "reinforce"] = field(
        default="sqrt",
        metadata={
            "help": "sqrt divides by sqrt(s(1-s)) as the released code; reinforce by s(1-s), "
            "the exact score function of a Bernoulli."
        },
    )
    baseline_window: int = field(
        default=5,
        metadata={
            "help": "w of the moving-average baseline delta <- (1 - 1/w) delta + (1/w) mean_k L_k."
        },
    )
    entropy_weight: float = field(
        default=0.0,
        metadata={"help": "lambda of the entropy penalty (pushes scores to 0/1); 0 disables it."},
    )
    sparsity_warmup_steps: int = field(
        default=0,
        metadata={"help": "Ramp the budget linearly from 0 to sparsity over this many steps."},
    )

    # initialization
    init: Literal["wanda_sp", "flap", "magnitude", "random", "constant", "state"] = field(
        default="wanda_sp", metadata={"help": "Importance metric that sets the initial scores."}
    )
    init_transform: Literal["sigmap", "norm"] = field(
        default="sigmap", metadata={"help": "How metric values become keep-probabilities."}
    )
    init_state_path: str | None = field(
        default=None,
        metadata={"help": 'Saved prune state (file or pruned-model folder) for init="state".'},
    )
    init_num_samples: int = field(
        default=128,
        metadata={"help": "Calibration sequences (of seq_len tokens) for activation statistics."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of masks, batches and random init."})

    # monitoring and checkpoints
    logging_steps: int = field(
        default=10, metadata={"help": "Record loss and baseline every this many steps."}
    )
    eval_steps: int = field(
        default=0,
        metadata={"help": "Evaluate the hard-masked model every this many steps (0: never)."},
    )
    save_steps: int = field(
        default=0,
        metadata={"help": "Write a resumable checkpoint every this many steps (0: never)."},
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where checkpoints go (output_dir/checkpoint.safetensors)."},
    )
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Free-form provenance recorded in saved models (e.g. base_model)."},
    )

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"PruningConfig.{name} {message}")

        if not isinstance(self.sparsity, int | float) or not 0.0 <= self.sparsity < 1.0:
            fail("sparsity", f"must be in [0, 1), got {self.sparsity!r}")
        for name, allowed in (
            ("target", TARGETS),
            ("budget", BUDGETS),
            ("init", INITS),
            ("init_transform", TRANSFORMS),
            ("estimator", ESTIMATORS),
            ("lr_scheduler", SCHEDULES),
        ):
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_samples", "batch_size", "baseline_window", "init_num_samples"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.num_samples < 2:
            fail(
                "num_samples",
                f"must be >= 2 (the estimator averages over K-1), got {self.num_samples}",
            )
        if self.seq_len < 2:
            fail("seq_len", f"must be >= 2, got {self.seq_len}")
        for name in (
            "max_steps",
            "sparsity_warmup_steps",
            "eval_steps",
            "save_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 0:
                fail(name, f"must be >= 0, got {getattr(self, name)}")
        if self.min_heads_per_layer < 0:
            fail("min_heads_per_layer", f"must be >= 0, got {self.min_heads_per_layer}")
        if self.learning_rate < 0:
            fail("learning_rate", f"must be >= 0, got {self.learning_rate}")
        if self.entropy_weight < 0:
            fail("entropy_weight", f"must be >= 0, got {self.entropy_weight}")
        if self.init == "state" and not self.init_state_path:
            fail("init_state_path", 'is required when init="state"')
        if self.save_steps and not self.output_dir:
            fail("output_dir", "is required when save_steps > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PruningConfig:
        """Rebuild from :meth:`to_dict` output (e.g. a saved prune state); unknown keys,
        written by other versions, are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
