"""Measuring the faithfulness of visual thinking (arXiv 2510.23482): interventions on the
text and the crops of a trace, effects with statistics, LVLM-judge metrics.

Modules: ``config`` (FaithfulnessConfig), ``evaluator`` (FaithfulnessEvaluator),
``report`` (FaithfulnessReport), ``interventions`` (do(T), do(V)), ``stats`` (the effect
core, bootstrap, McNemar), ``judge``, ``metric`` (the ``mcot_faithfulness`` logic),
``prompts``, ``presets`` (a model's own prompt format and tool rules: DeepEyes), ``cli``. The model backends and the trace format live in
:mod:`hf_faithful.mcot`. Import from the submodules; this package imports nothing, so
light users do not pay for torch.
"""
