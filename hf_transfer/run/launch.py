"""How a run is launched and ended: the TrainingArguments defaults every recipe shares, launcher checks, and the
clean end of a run's processes.
"""
from __future__ import annotations

import logging
import os
import sys

from hf_transfer.errors import HfTransferError


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


def check_launch(train_args) -> None:
    """Combinations of launcher and options that would fail or lose work after training: refused before it starts."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") and \
            os.environ.get("FSDP_STATE_DICT_TYPE", "").upper().startswith("SHARDED"):
        # Under a sharded state dict Trainer.save_model writes no full weights: the output folder would hold no model.
        raise HfTransferError("FSDP with fsdp_state_dict_type SHARDED_STATE_DICT saves no full weights at the end; "
                              "set fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config")
    if train_args.push_to_hub:
        from huggingface_hub import constants, get_token

        if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise HfTransferError("--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set; unset it, or drop --push_to_hub "
                                  "and upload the output folder later")
        if get_token() is None:
            raise HfTransferError("--push_to_hub needs a Hub token: set HF_TOKEN or run `hf auth login` first")
        from huggingface_hub import whoami

        try:
            whoami()  # the token is checked now, not after hours of training; it is never printed
        except Exception as error:  # noqa: BLE001 - offline, refused or expired: the Hub client raises many types
            raise HfTransferError(f"--push_to_hub: the Hub did not accept the token or cannot be reached "
                                  f"({type(error).__name__}); check the network and `hf auth whoami`") from error


def shut_down_worker_pools() -> None:
    """Stop joblib's reusable worker processes (the frozen baseline's cross-validation), so none outlive the run."""
    try:
        from joblib.externals.loky import get_reusable_executor
    except ImportError:
        return
    get_reusable_executor().shutdown(wait=True)


def finish_processes() -> None:
    """End a launched run's processes cleanly once every rank is done (a single process only shuts its worker pools).

    Only a gloo (CPU) process group is left without its destructors: tearing gloo down at interpreter exit aborted a
    rank about one two-process CPU run in four ("terminate called without an active exception"), and
    `destroy_process_group` itself sometimes hung. There every rank meets at a barrier (all outputs are written by
    then), flushes, and leaves with status 0 (this runs only after `main` returned). NCCL and the other backends are
    torn down the ordinary way, so trackers' exit hooks run and the exit status is the interpreter's own.
    """
    import torch.distributed as dist

    shut_down_worker_pools()
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() != "gloo":
        dist.destroy_process_group()
        return
    dist.barrier()
    logging.shutdown()  # flush every log handler: os._exit skips interpreter clean-up
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
