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
        # With True (the Trainer's default) the logged loss came out doubled under two processes (1.387 vs 0.694);
        # per-example losses averaged per device are right for classification.
        "average_tokens_across_devices": False,
    }
    import torch

    if not torch.cuda.is_available():
        defaults["dataloader_pin_memory"] = False  # pinning needs a GPU; on CPU it only warns
    if not _has_accelerator():
        # The Trainer refuses --bf16 without use_cpu on a machine with no GPU, and `accelerate launch` on such a
        # machine starts several processes that each train alone unless the script asks for the CPU.
        defaults["use_cpu"] = True
    if automatic_precision() and native_bf16() is not None:
        # Precision `auto`: bfloat16 where the hardware computes it natively (see native_bf16), fp32 elsewhere.
        defaults["bf16"] = True
    defaults.update(overrides)
    return defaults


AUTO_PRECISION_VARIABLE = "HF_TRANSFER_AUTO_BF16"


def automatic_precision() -> bool:
    """Whether the recipes choose the precision themselves (bf16 where native). Not when the launch asked for half
    precision (`accelerate launch --mixed_precision bf16|fp16`, which sets ACCELERATE_MIXED_PRECISION), nor with
    HF_TRANSFER_AUTO_BF16=0. accelerate sets that variable to "no" whenever nothing was asked, so "no" leaves the choice
    to the recipe; --bf16 false is how a single run asks for fp32."""
    if os.environ.get(AUTO_PRECISION_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower() == "no"


def _has_accelerator() -> bool:
    import torch

    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available() or has_xpu


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> str | None:
    """Why this machine trains in bfloat16 by default, or None (fp32).

    A GPU that supports bfloat16 (Ampere or newer) and an x86 CPU with AVX512-BF16 or AMX instructions compute it
    natively: about half the time of fp32 for the same steps. Elsewhere (older CPUs, Apple silicon, older GPUs)
    bfloat16 is emulated or unsupported, and fp32 is the faster and safer choice.
    """
    import torch

    if torch.cuda.is_available():
        return "this GPU supports bfloat16" if torch.cuda.is_bf16_supported() else None
    if _has_accelerator():
        return None
    flags = _cpu_flags() & {"avx512_bf16", "amx_bf16"}
    return f"this CPU computes bfloat16 natively ({', '.join(sorted(flags))})" if flags else None


def emulated_bf16_note(train_args) -> str | None:
    """A note for a run that asked for bf16 on a CPU that only emulates it: it trains, several times slower than fp32
    (benchmarks/README.md, bf16 against fp32 on a CPU), which the user would not otherwise learn."""
    if precision(train_args) != "bf16" or _has_accelerator() or native_bf16() is not None:
        return None
    return ("this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 is emulated here, several times slower than "
            "fp32; --bf16 false trains faster")


def precision(train_args) -> str:
    """The precision a run trains and evaluates in: bf16, fp16 or fp32."""
    chosen = "bf16" if train_args.bf16 else "fp16" if train_args.fp16 else getattr(train_args, "mixed_precision", "no")
    return {"no": "fp32"}.get(chosen, chosen)


def choose_threads(train_args) -> int:
    """Torch's intra-op threads for this process. One process keeps torch's own choice (the physical cores); the
    processes of a multi-process launch on a CPU share the cores, so that two of them do not each spin on all of
    them. OMP_NUM_THREADS, when set (torchrun sets it), is the user's choice and wins."""
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local > 1 and "OMP_NUM_THREADS" not in os.environ and (train_args.use_cpu or not _has_accelerator()):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // local))
    return torch.get_num_threads()


def check_launch(train_args) -> None:
    """Combinations of launcher and options that would fail or lose work after training: refused before it starts."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") and \
            os.environ.get("FSDP_STATE_DICT_TYPE", "").upper().startswith("SHARDED"):
        # Under a sharded state dict Trainer.save_model writes no full weights: the output folder would hold no model.
        raise HfTransferError("FSDP with fsdp_state_dict_type SHARDED_STATE_DICT saves no full weights at the end; "
                              "set fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config")
    if train_args.push_to_hub:
        from huggingface_hub import get_token

        from hf_transfer.sharing.hub import hub_offline

        if hub_offline():
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
