"""Evaluation shared by both halves: perplexity (pruning-paper protocol) and lm-eval glue."""

from hf_faithful.evaluation.harness import (
    BUNDLED_TASKS,
    TASKS_DIR,
    evaluate_with_lm_eval,
    format_results,
)
from hf_faithful.evaluation.perplexity import perplexity

__all__ = ["BUNDLED_TASKS", "TASKS_DIR", "evaluate_with_lm_eval", "format_results", "perplexity"]
