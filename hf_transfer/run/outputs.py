"""Run folders: what a run writes there, the run's identity (run.json), the checks before the first write, and
resuming from the last complete checkpoint."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import time
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
    "generated_predictions.txt", "shift_preview.txt",
    "tasks",  # the multitask recipe's per-task models (tasks/<name>)
    "onnx",  # recipes/export.py's default export folder: an export of the replaced model would outlive it
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


def run_options(folder: str | Path) -> dict:
    """The options of the run that wrote `folder` (its run.json), or {} for a folder no recipe wrote."""
    path = Path(folder) / RUN_MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("options") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def resume_requested(train_args) -> bool:
    return train_args.resume_from_checkpoint not in (None, "")


def check_output_dir(train_args, output_args: OutputArgs, identity: dict) -> None:
    """Refuse to mix runs: a folder holding another run needs --overwrite_output_dir, and a resume needs the same run."""
    out = Path(train_args.output_dir)
    written = _written(out) if out.is_dir() else []
    if not written or output_args.overwrite_output_dir:
        return
    if not resume_requested(train_args):
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


def _missing(checkpoint: Path) -> list[str]:
    """What keeps a checkpoint from being complete: its trainer state, its weights, or leftover temporary files."""
    missing = [] if (checkpoint / "trainer_state.json").is_file() else ["no trainer state"]
    if not (any(checkpoint.glob("*.safetensors")) or any(checkpoint.glob("*.bin"))):
        missing.append("no weights")
    if any(".tmp" in p.name or p.name.startswith("tmp") for p in checkpoint.iterdir()):
        missing.append("temporary files of an unfinished write")
    return missing


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint that was completely written. Newer, incomplete ones (a kill or a full disk during a save)
    cannot be resumed from and would be met again by every later resume: they are reported and removed."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True,
    )
    for checkpoint in checkpoints:
        missing = _missing(checkpoint)
        if not missing:
            return str(checkpoint)
        shutil.rmtree(checkpoint)
        print(f"note: removed {checkpoint.name}: it was not completely written ({', '.join(missing)}), "
              "probably interrupted during its save", flush=True)
    return None


def check_resume(train_args) -> str | None:
    """`--resume_from_checkpoint` as the Trainer wants it: a checkpoint folder (the last complete one for 'last'), or None."""
    value = train_args.resume_from_checkpoint
    if value is None or value == "":
        return None
    if str(value).lower() in ("true", "last", "latest"):
        last = last_complete_checkpoint(train_args.output_dir)
        if last is None:
            # A restart loop passes `last` from its first launch on, and a kill during the first save leaves no
            # checkpoint: both start at step 0 in the same folder (the run identity is still checked).
            print(f"note: --resume_from_checkpoint {value}: no complete checkpoint in {train_args.output_dir} yet; "
                  "starting from step 0", flush=True)
        return last
    if not Path(value).is_dir():
        raise HfTransferError(f"--resume_from_checkpoint {value} does not exist; pass a checkpoint folder or 'last'")
    return value


def finished_run(train_args, output_args: OutputArgs) -> dict | None:
    """The saved metrics of a run that already finished in this folder, when it is resumed: nothing is left to do,
    and re-running its end would overwrite its loss, times and card with those of an empty resume."""
    metrics = Path(train_args.output_dir) / "metrics.json"
    if output_args.overwrite_output_dir or not resume_requested(train_args) or not metrics.is_file():
        return None
    return json.loads(metrics.read_text())


def write_failure(error: BaseException, folder: str) -> HfTransferError | None:
    """A write into the output folder that failed for a reason the user can fix (a full disk, a file size limit,
    permissions), as one line; None for anything else. What finished (complete checkpoints) stays resumable."""
    from safetensors import SafetensorError

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS):
        cause = error.strerror or str(error)
    elif isinstance(error, SafetensorError) and any(s in str(error) for s in ("too large", "No space", "Permission denied")):
        cause = str(error).strip().splitlines()[0]
    else:
        return None
    return HfTransferError(f"writing to {folder} failed ({cause}); free space or fix the folder, then run again with "
                           "--resume_from_checkpoint last (complete checkpoints are kept)")


LOCK_FILE = ".hf_transfer.lock"


class RunLock:
    """One run per output folder: a lock file created atomically (O_EXCL) when the folder is checked, removed when the
    run ends or fails. A lock left by a process that no longer runs (a kill) is recognised and taken over.

    Only the main process of a launch takes it; the other ranks write into the folder under its lock.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False
        self.created_folder = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise HfTransferError(f"--output_dir {self.folder} is a file, not a folder; choose a folder")
        try:
            self.created_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HfTransferError(f"cannot create --output_dir {self.folder} ({error.strerror or error}); "
                                  "choose a folder you can write to") from error
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    holder = self._holder()
                    raise HfTransferError(
                        f"another run (process {holder.get('pid')} on {holder.get('host')}) is writing to {self.folder}; "
                        f"wait for it to finish or choose another --output_dir (if no run is going on, delete {self.path})"
                    ) from None
                print(f"note: {self.path} was left by a run that is no longer running; taking it over", flush=True)
                self.path.unlink(missing_ok=True)
                continue
            except OSError as error:
                raise HfTransferError(f"cannot write to --output_dir {self.folder} ({error.strerror or error}); "
                                      "fix its permissions or choose another folder") from error
            with os.fdopen(descriptor, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
            self.held = True
            return
        raise HfTransferError(f"cannot take the lock {self.path}: another run took it at the same moment; try again")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written this instant, or truncated: treated as held below

    def _holder_alive(self) -> bool:
        holder = self._holder()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return True  # another machine's process (a shared disk), or unreadable: cannot be checked from here
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, another user's
        return True

    def release(self) -> None:
        if not self.held:
            return
        self.path.unlink(missing_ok=True)
        self.held = False
        if self.created_folder and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a run refused before its first write leaves no empty folder behind
