"""Training-argument defaults every recipe shares, and resume handling checked before a run starts."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import HfTransferError


def recipe_defaults(**overrides) -> dict:
    """TrainingArguments defaults for recipes; a recipe overrides what its task needs, config files and flags win."""
    defaults = {
        "output_dir": "outputs/run",
        "eval_strategy": "epoch",
        "logging_steps": 10,
        "save_total_limit": 2,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64,
        "report_to": "none",  # no tracker unless asked: nothing leaves the machine by default
        # With True (the Trainer's default) the logged loss came out doubled under two processes (FACTS.md);
        # per-example losses averaged per device are right for classification.
        "average_tokens_across_devices": False,
    }
    import torch

    if not torch.cuda.is_available():
        defaults["dataloader_pin_memory"] = False  # pinning needs a GPU; on CPU it only warns
    if _launched_distributed_without_accelerator():
        # `accelerate launch` with a CPU-only machine starts the processes but leaves them single-process
        # unless the script asks for the CPU: each rank would silently train alone (FACTS.md).
        defaults["use_cpu"] = True
    defaults.update(overrides)
    return defaults


def _launched_distributed_without_accelerator() -> bool:
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return not (torch.cuda.is_available() or torch.backends.mps.is_available() or has_xpu)


def check_resume(train_args) -> str | bool | None:
    """`--resume_from_checkpoint` as the Trainer wants it: a checkpoint folder, True for the latest, or None."""
    value = train_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    if str(value).lower() in ("true", "last", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        if not Path(train_args.output_dir).is_dir() or get_last_checkpoint(train_args.output_dir) is None:
            raise HfTransferError(f"--resume_from_checkpoint {value}: no checkpoint in {train_args.output_dir} to resume from")
        return True
    if not Path(value).is_dir():
        raise HfTransferError(f"--resume_from_checkpoint {value} does not exist; pass a checkpoint folder or 'last'")
    return value


def finish_processes() -> None:
    """End a launched run's process once every rank is done (a no-op in a single process).

    Tearing gloo down at interpreter exit aborted a rank about one two-process CPU run in four ("terminate called
    without an active exception"), and `destroy_process_group` itself sometimes hung. So every rank meets at a
    barrier (all outputs are written by then) and leaves at once, skipping the process group's destructors.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
