"""lm-eval glue: evaluate an in-memory model on standard or bundled offline tasks.

Bundled tasks live in ``hf_faithful/assets/tasks`` (YAML + a self-contained loader),
so they also work from lm-eval's own CLI::

    lm_eval --model hf --model_args pretrained=DIR --tasks hff_cloze \\
        --include_path $(python -c "import hf_faithful.evaluation as e; print(e.TASKS_DIR)")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hf_faithful.assets import TASKS_DIR

BUNDLED_TASKS = ("hff_wikitext2", "hff_cloze")
DEFAULT_TASKS = BUNDLED_TASKS


def task_manager(tasks: Sequence[str], include_path: str | Path | None):
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + ([str(include_path)] if include_path else [])
    bundled_only = all(t in BUNDLED_TASKS for t in tasks) and include_path is None
    # Indexing lm-eval's thousands of default tasks takes seconds; skip it when we can.
    manager = TaskManager(include_path=paths, include_defaults=not bundled_only)
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        hint = f"bundled tasks: {', '.join(BUNDLED_TASKS)}"
        raise ValueError(f"unknown task(s): {', '.join(unknown)} ({hint})")
    return manager


def evaluate_with_lm_eval(
    model: torch.nn.Module,
    tokenizer,
    tasks: Sequence[str] = DEFAULT_TASKS,
    *,
    limit: int | float | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    include_path: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Run lm-eval's ``simple_evaluate`` on an in-memory model.

    Returns ``{task: {metric: value}}`` (lm-eval's ``metric,filter`` keys reduced to
    the metric name, standard errors as ``<metric>_stderr``). ``limit`` caps the
    number of documents per task (an int) or takes a fraction (a float < 1).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError("tasks is empty")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    manager = task_manager(tasks, include_path)
    device = device or str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
        verbosity="WARNING",
    )
    results: dict[str, dict[str, float]] = {}
    for task, metrics in out["results"].items():
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            if "," not in key or not isinstance(value, int | float):
                continue
            name = key.split(",", 1)[0]
            clean[name] = float(value)
        results[task] = clean
    return results


def format_results(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of ``{task: {metric: value}}`` (stderr shown as ±)."""
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, metrics in results.items():
        for name, value in metrics.items():
            if name.endswith("_stderr"):
                continue
            err = metrics.get(f"{name}_stderr")
            shown = f"{value:.4f}" + (
                f" ± {err:.4f}" if isinstance(err, float) and err == err else ""
            )
            lines.append(f"| {task} | {name} | {shown} |")
    return "\n".join(lines)
