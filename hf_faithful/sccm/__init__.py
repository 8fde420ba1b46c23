"""SCCM (arXiv 2510.23482): rewards that make the crops of a multimodal chain of thought
sufficient and minimal, on TRL's GRPOTrainer.

Modules: ``config`` (SCCMConfig; ``presets``), ``rewards`` (plain reward functions), ``environment``
(the zoom-in tool for TRL's ``environment_factory``), ``trainer`` (SCCMRewardTrainer),
``data`` (DeepEyes-style datasets), ``card`` (model card), ``judge`` (LLM judge of free-form
answers), ``cli`` (``hf-faithful sccm``), ``trl_compat`` (the TRL internals relied on). It stands on
:mod:`hf_faithful.mcot` and never imports ``faithfulness``. ``SCCMConfig`` and
``SCCMRewardTrainer`` are re-exported lazily by ``hf_faithful``.
"""
