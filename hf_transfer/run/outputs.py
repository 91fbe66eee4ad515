"""Run folders: what a run writes there, the run's identity (run.json), the checks before the first write, and
resuming from the last complete checkpoint."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.sharing.hub import SharingArgs


@dataclass
class OutputArgs:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace an earlier run in --output_dir: what this project wrote there is removed (once the new "
                  "run's input has been checked). Without it, a folder holding another run is refused."},
    )


RUN_MANIFEST = "run.json"


# What the recipes write into an output folder; --overwrite_output_dir removes these and nothing else.
WRITTEN = (
    "checkpoint-*", "*.safetensors", "*.safetensors.index.json", "adapter_config.json", "config.json",
    "generation_config.json", "metrics.json", "metrics.json.tmp", "log_history.json", RUN_MANIFEST, "training_args.bin",
    "tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "spiece.model", "added_tokens.json",
    "preprocessor_config.json", "processor_config.json", "chat_template.*", "README.md", "*_predictions.jsonl", "*.png",
)


# Options that change the result of a run (and so what a checkpoint may be resumed into). Where the output goes,
# how often it logs, evaluates or saves, and how data is fed do not.
_TRAINING_KEYS = (
    "seed", "data_seed", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "optim", "bf16", "fp16", "label_smoothing_factor", "train_sampling_strategy",
)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _path_identity(value: str) -> str | None:
    """A local file's content digest, or a folder's listing with sizes; None for what is not a local path."""
    path = Path(value).expanduser()
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        listing = sorted((str(f.relative_to(path)), f.stat().st_size) for f in path.rglob("*") if f.is_file())
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return None


def run_identity(instances) -> dict:
    """What makes two runs the same run: every option of the recipe (training options that change results only),
    and the content of every local file or folder an option names. Saved as run.json beside the outputs."""
    options: dict = {}
    for instance in instances:
        values = instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)
        if type(instance).__name__.endswith("TrainingArguments"):
            values = {k: values.get(k) for k in _TRAINING_KEYS}
        elif isinstance(instance, (OutputArgs, SharingArgs)):  # where and how the result is shared: not the run
            continue
        options.update({k: v for k, v in values.items() if k != "output_dir"})
    files = {}
    for key, value in options.items():
        if isinstance(value, str) and value and key not in ("strategy",):
            digest = _path_identity(value)
            if digest is not None:
                files[key] = digest
    return {"options": json.loads(json.dumps(options, default=str)), "files": files}


def _written(folder: Path) -> list[Path]:
    return sorted({p for pattern in WRITTEN for p in folder.glob(pattern)})


def check_output_dir(train_args, output_args: OutputArgs, identity: dict, resume) -> None:
    """Refuse to mix runs: a folder holding another run needs --overwrite_output_dir, and a resume needs the same run."""
    out = Path(train_args.output_dir)
    written = _written(out) if out.is_dir() else []
    if not written or output_args.overwrite_output_dir:
        return
    if resume is None:
        names = ", ".join(p.name for p in written[:4]) + (", ..." if len(written) > 4 else "")
        raise HfTransferError(
            f"--output_dir {out} already holds a run ({names}); pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint last to continue it, or choose another folder"
        )
    manifest = out / RUN_MANIFEST
    if not manifest.is_file():
        raise HfTransferError(f"{out} has no {RUN_MANIFEST}, so its checkpoints cannot be matched to this run; "
                              "start afresh with --overwrite_output_dir or another --output_dir")
    saved = json.loads(manifest.read_text())
    differ = sorted(k for k in set(saved["options"]) | set(identity["options"]) if saved["options"].get(k) != identity["options"].get(k))
    differ += sorted(f"{k} (content)" for k in set(saved["files"]) | set(identity["files"]) if saved["files"].get(k) != identity["files"].get(k))
    if differ:
        raise HfTransferError(
            f"the checkpoints in {out} belong to another run (it differs in: {', '.join(differ[:6])}); resume with the "
            "same options and data, or start afresh with --overwrite_output_dir or another --output_dir"
        )


def start_output_dir(train_args, output_args: OutputArgs, identity: dict, resume) -> None:
    """Once the input is checked: clear an earlier run when asked, and record this run's identity (rank 0)."""
    if not train_args.should_save:
        return
    out = Path(train_args.output_dir)
    if output_args.overwrite_output_dir and resume is None and out.is_dir():
        for path in _written(out):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MANIFEST).write_text(json.dumps(identity, indent=1, sort_keys=True))


def _complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer finished writing: its state file and weights are there, and no temporary file."""
    has_weights = any(checkpoint.glob("*.safetensors")) or any(checkpoint.glob("*.bin"))
    stray = [p for p in checkpoint.iterdir() if ".tmp" in p.name or p.name.startswith("tmp")]
    return (checkpoint / "trainer_state.json").is_file() and has_weights and not stray


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint that was completely written. Incomplete ones (a kill during a save) are reported, and
    their temporary files removed, so that a later resume does not meet them again."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True,
    )
    for checkpoint in checkpoints:
        if _complete(checkpoint):
            return str(checkpoint)
        stray = [p for p in checkpoint.iterdir() if ".tmp" in p.name or p.name.startswith("tmp")]
        for path in stray:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"note: skipped {checkpoint.name}: it was not completely written (no trainer state or weights"
              f"{', temporary files removed' if stray else ''}), probably interrupted during its save", flush=True)
    return None


def check_resume(train_args) -> str | None:
    """`--resume_from_checkpoint` as the Trainer wants it: a checkpoint folder (the last complete one for 'last'), or None."""
    value = train_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    if str(value).lower() in ("true", "last", "latest"):
        last = last_complete_checkpoint(train_args.output_dir)
        if last is None:
            raise HfTransferError(f"--resume_from_checkpoint {value}: no complete checkpoint in {train_args.output_dir} to resume from")
        return last
    if not Path(value).is_dir():
        raise HfTransferError(f"--resume_from_checkpoint {value} does not exist; pass a checkpoint folder or 'last'")
    return value
