"""Language-model evaluation used by the pruning half: WikiText-2 perplexity (the pruning
paper's protocol), lm-eval glue and bundled offline tasks, and `hf-faithful evaluate`.

The faithfulness half measures with its own code (``hf_faithful.faithfulness``).
"""

from hf_faithful.evaluation.harness import (
    BUNDLED_TASKS,
    TASKS_DIR,
    evaluate_with_lm_eval,
    format_results,
)
from hf_faithful.evaluation.perplexity import perplexity

__all__ = ["BUNDLED_TASKS", "TASKS_DIR", "evaluate_with_lm_eval", "format_results", "perplexity"]
