"""Measuring the faithfulness of visual thinking (arXiv 2510.23482): interventions on the
text and the crops of a trace, effects with statistics, LVLM-judge metrics, backends.

Import from the submodules (``evaluator``, ``interventions``, ``stats``, ``judge``,
``backends``, ``metric``); they are kept apart so light users do not import torch.
"""
