"""Domain adaptation: a labelled source domain and an unlabelled target domain in one run of the ordinary Trainer.

Each method is an objective (`hf_transfer.trainer.Objective`) that the trainer adds to the source task's loss:
`objectives.py` holds the maths and the objectives, `diagnostics.py` the proxy A-distance and the feature view,
the task (options, `load` step, hooks) is `hf_transfer/tasks/domain_adaptation.py`, and the data side (both
domains, mixed batches, the Amazon `.review` reader) `hf_transfer/data/domains.py`.
"""
from hf_transfer.adaptation.objectives import (
    DOMAIN,
    Coral,
    DomainAdversarial,
    DomainNormalisation,
    FeatureTap,
    MultiKernelMMD,
    SelfTraining,
    TargetMaskedLM,
    balanced_selection,
    block_output_norms,
    coral_loss,
    dann_coefficient,
    mmd_loss,
    reverse_gradient,
    self_training_ramp,
    shared_masked_lm,
)

__all__ = [
    "DOMAIN", "Coral", "DomainAdversarial", "DomainNormalisation", "FeatureTap",
    "MultiKernelMMD", "SelfTraining", "TargetMaskedLM", "balanced_selection", "block_output_norms", "coral_loss",
    "dann_coefficient", "mmd_loss", "reverse_gradient", "self_training_ramp", "shared_masked_lm",
]
