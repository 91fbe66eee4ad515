"""Pushing a run to the Hugging Face Hub: the run's very last step, done by the run and never by the Trainer.

`prepare_sharing` runs before the Trainer exists. It checks the sharing options, and takes `--push_to_hub` (and a
`--hub_token`, if one was given) away from the TrainingArguments: with `push_to_hub=True` the Trainer's own
`save_model` would push before the card, metrics.json or a carried-over weight exist, and a token left there would
be pickled into training_args.bin. It returns the plan; `push_output` carries it out on rank 0 once everything is
written. `push_folder` is the upload itself, also for a folder pushed later by hand or from a notebook:

    from hf_transfer.sharing.hub import push_folder
    push_folder("outputs/sentiment", "your-name/minilm-reviews", private=True)

What is uploaded: the card (README.md), weights (or the adapter and its config), tokenizer or processor,
metrics.json, log_history.json and any predictions or plots. What is not: checkpoints (optimizer state), the
pickled training arguments, and run.json / run.log (this machine's paths and logs). A pushed adapter names its base
model by its public name (from the card), not by a local path. The token comes from `HF_TOKEN` or the usual
`hf auth login`; it is handed to huggingface_hub and never printed or written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.models.loading import (
    DEFAULT_MODEL_LICENSE,
    DEFAULT_MODEL_NAME,
    local_path,
)

# Never uploaded (matched against every part of a file's path inside the output folder); `*.lock`: the run's own
# lock file (run/outputs.py), held until the run ends, so still there when the run pushes.
NOT_UPLOADED = ("checkpoint-*", "training_args.bin", "run.json", "run.log", "*.tmp", "*.lock", ".git", ".cache",
                "__pycache__", "runs")


@dataclass
class PushPlan:
    """Where the run goes at the end. `token` holds only a `--hub_token` given on the command line (never shown)."""

    repo_id: str
    private: bool | None = None
    token: str | None = field(default=None, repr=False)


def prepare_sharing(args) -> PushPlan | None:
    """Before the Trainer is built: check the sharing options, and take the push (and any token) away from it.

    Returns the push plan, or None when the run is not pushed. `check_launch` has already refused a push that
    cannot work (offline, no token, a token the Hub refuses) before anything loads.
    """
    from hf_transfer.sharing.hub import SharingArgs

    sharing, train_args = args[SharingArgs], args.training
    if sharing.merge_lora and args.strategy.strategy not in ("lora", "peft"):
        raise HfTransferError(f"--merge_lora applies to --strategy lora (or peft), not '{args.strategy.strategy}'; "
                              "drop it or change the strategy")
    malformed = [entry for entry in sharing.compare_references or [] if not all(entry.partition("="))]
    if malformed:
        raise HfTransferError(f"--compare_references takes arm=folder entries, got '{malformed[0]}'")
    token, train_args.hub_token = train_args.hub_token, None  # never pickled into training_args.bin
    if not train_args.push_to_hub:
        return None
    train_args.push_to_hub = False  # the Trainer must not push from save_model: the run pushes last
    repo_id = train_args.hub_model_id or Path(train_args.output_dir).absolute().name
    if "/" not in repo_id:  # the card names the repository in full, so a reader can load it
        from huggingface_hub import whoami

        try:
            repo_id = f"{whoami(token=token)['name']}/{repo_id}"
        except Exception as error:  # noqa: BLE001 - offline, refused or expired: the Hub client raises many types
            raise HfTransferError(f"--push_to_hub: cannot ask the Hub for your user name ({type(error).__name__}); "
                                  "pass --hub_model_id your-name/model-name") from error
    return PushPlan(repo_id, train_args.hub_private_repo, token)


def push_output(plan: PushPlan, output_dir: str) -> str:
    """The run's last step (rank 0): push the output folder as `plan` says. Returns the repository id."""
    return push_folder(output_dir, plan.repo_id, private=plan.private, token=plan.token)


def files_to_upload(folder: str | Path) -> list[Path]:
    """The files of an output folder that a push uploads, relative to it (checkpoints, pickles and local logs left out)."""
    folder = Path(folder)
    chosen = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(fnmatch(part, pattern) for part in relative.parts for pattern in NOT_UPLOADED):
            chosen.append(relative)
    return chosen


def hub_offline() -> bool:
    """Whether the Hub is switched off (HF_HUB_OFFLINE). The environment is read again: huggingface_hub reads it
    once, at import, and a notebook or a test may set it later."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _card_base_model(folder: Path) -> str | None:
    """The base model the folder's own card names (a public name by construction), or None."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    base = ModelCard.load(card).data.get("base_model")  # a local file: no Hub call
    return base[0] if isinstance(base, list) and len(base) == 1 else base if isinstance(base, str) else None


def retarget_card(source: Path, target: Path, repo_id: str) -> bool:
    """Write to `target` the card at `source` naming the repository: a card written before the repository was known
    names the model by its output folder (title, model-index, loading code). False when it already names it."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(source)  # a local file: no Hub call
    old = card.data.get("model_name")
    how_to = card.text.partition("## How to use")
    reference = re.search(r'(?:from_pretrained\(|model=)"([^"]+)"', how_to[2])
    if old == repo_id and (reference is None or reference.group(1) == repo_id):
        return False
    text = how_to[2].replace(f'"{reference.group(1)}"', f'"{repo_id}"') if reference else how_to[2]
    text = how_to[0] + how_to[1] + text
    if old and text.lstrip().startswith(f"# {old}\n"):
        text = text.replace(f"# {old}\n", f"# {repo_id}\n", 1)
    card.text = text
    if old:
        card.data.model_name = repo_id
    card.save(target)
    return True


def stage(folder: str | Path, destination: str | Path, repo_id: str | None = None,
          base_model_name: str | None = None) -> list[Path]:
    """Lay out in `destination` exactly what a push uploads (hard links where possible, else copies); returns the files.

    An adapter's config names its base model by the path it was trained from; the staged copy names it by its
    public name instead (`base_model_name`, else the card's base_model), so the pushed adapter loads anywhere, and
    the staged card names the repository (`repo_id`). The output folder itself is left as it is: it still loads
    on this machine, offline.
    """
    folder, destination = Path(folder), Path(destination)
    base_model_name = base_model_name or _card_base_model(folder)
    files = files_to_upload(folder)
    for relative in files:
        source, target = folder / relative, destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative == Path("README.md") and repo_id and retarget_card(source, target, repo_id):
            continue
        if relative.name == "adapter_config.json" and base_model_name:
            config = json.loads(source.read_text())
            if local_path(config.get("base_model_name_or_path")) is not None:
                config["base_model_name_or_path"] = base_model_name
                target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
                continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return files


def _first_line(error: Exception, token: str | None) -> str:
    """An error's first line, cut short, with any token in it blanked (the Hub client never puts one there, but a
    message is printed, so it is checked)."""
    from huggingface_hub import get_token

    line = (str(error).strip().splitlines() or ["no message"])[0][:200]
    for secret in {token, get_token()} - {None, ""}:
        line = line.replace(secret, "<token>")
    return line


def later_command(folder: str | Path, repo_id: str) -> str:
    return f"python -c \"from hf_transfer.sharing.hub import push_folder; push_folder('{folder}', '{repo_id}')\""


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                base_model_name: str | None = None, commit_message: str = "Upload with hf_transfer") -> str:
    """Create the repository if needed and upload the output folder to it in one commit; returns the repository id.

    `token`: a Hub token, or None for the usual one (HF_TOKEN, or the login saved by `hf auth login`).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise HfTransferError(f"{folder} has no model card (README.md): push the output folder of a finished run")
    if hub_offline():
        raise HfTransferError(f"cannot push {folder}: HF_HUB_OFFLINE is set; unset it, then run {later_command(folder, repo_id)}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_transfer_push_") as staged:
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            files = stage(folder, staged, repo.repo_id, base_model_name)
            api.upload_folder(repo_id=repo.repo_id, folder_path=staged, commit_message=commit_message)
        except Exception as error:  # noqa: BLE001 - network, permission, quota: the run's outputs are safe either way
            raise HfTransferError(
                f"the push to {repo_id} failed ({type(error).__name__}: {_first_line(error, token)}); "
                f"the run is saved in {folder}: push it later with {later_command(folder, repo_id)}"
            ) from None  # the chained error could carry request details: the one line says what failed
    print(f"pushed {len(files)} files ({', '.join(str(f) for f in files[:6])}{', ...' if len(files) > 6 else ''}) "
          f"to {repo}", flush=True)
    return repo.repo_id


@dataclass
class SharingArgs:
    """What a model card and a push need beyond the training options (hf_transfer/sharing/cards.py, hf_transfer/sharing/hub.py).

    The push itself takes the Trainer's own flags (--push_to_hub, --hub_model_id, --hub_private_repo), read by the
    run and done as its last step, never by the Trainer."""

    base_model_name: str | None = field(
        default=None,
        metadata={"help": "The base model's public name (a Hub id) for the model card and a pushed adapter, when "
                  "--model_name_or_path is a local folder. Default: the Hub id given, or the embedded default's real name "
                  f"({DEFAULT_MODEL_NAME}); a local path is never written into a card."},
    )
    license: str | None = field(
        default=None,
        metadata={"help": "Licence of the trained model for its card (a Hub licence id, e.g. apache-2.0). Default: the "
                  f"base model's where it is known locally (the embedded default's: {DEFAULT_MODEL_LICENSE})."},
    )
    language: list[str] | None = field(
        default=None, metadata={"help": "Language codes of the data, for the card (default: a known data set's, e.g. en)."}
    )
    compare_references: list[str] | None = field(
        default=None,
        metadata={"help": "Set by recipes/compare.py: its reference runs for this seed and data, as arm=folder (scratch, "
                  "frozen+<head>); their metrics stand beside this model's in the card's results."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "LoRA: save the adapters merged into the base weights (a full model that `pipeline` loads "
                  "without peft) instead of the adapter alone."},
    )
