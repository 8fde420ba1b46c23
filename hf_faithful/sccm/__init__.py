"""SCCM (arXiv 2510.23482): rewards that make the crops of a multimodal chain of thought
sufficient and minimal, on TRL's GRPOTrainer.

``SCCMConfig`` and ``SCCMRewardTrainer`` are re-exported lazily by ``hf_faithful``; import
the pieces from their modules (``hf_faithful.sccm.rewards``, ``.environment``, ``.data``).
"""
