"""Domain adaptation: a labelled source domain and an unlabelled target domain in one run of the ordinary Trainer.

Each method is an objective (`hf_transfer.trainer.Objective`) that the trainer adds to the source task's loss:
`objectives.py` holds the maths and the objectives, `diagnostics.py` the proxy A-distance and the feature view,
`task.py` the recipe's options, `load` step and hooks. The data side (both domains, mixed batches, the Amazon
`.review` reader) is `hf_transfer/data/domains.py`.
"""
from .objectives import (
    DOMAIN, Coral, DomainAdversarial, DomainNormalisation, FeatureTap, MultiKernelMMD, block_output_norms, coral_loss,
    dann_coefficient, mmd_loss, reverse_gradient,
)
from .task import METHODS, AdaptationArgs

__all__ = [
    "DOMAIN", "METHODS", "AdaptationArgs", "Coral", "DomainAdversarial", "DomainNormalisation", "FeatureTap",
    "MultiKernelMMD", "block_output_norms", "coral_loss", "dann_coefficient", "mmd_loss", "reverse_gradient",
]
