"""The multitask recipe's options and its task file: which tasks, their data, their loss weights.

    tasks:
      - name: cr                      # names the task's metrics (eval_cr_accuracy) and its folder (tasks/cr)
        train_file: cr_train.csv      # paths are relative to this file
        validation_file: cr_test.csv
        text_column: sentence
        label_column: label
        loss_weight: 1.0              # optional: the task's loss is multiplied by it in training
      - name: sst2
        dataset_name: glue
        dataset_config_name: sst2

A task entry takes the text recipes' data options (`TextDataArgs`, by their field names) but the shared ones, which
are the recipe's own flags (--max_seq_length, --pad_to_max_length): every task's batches go through one tokenizer
and collator. Everything here is checked as the options are parsed, before any data or model loads.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from hf_transfer.data.labels import TASK_TYPES
from hf_transfer.data.text import TextDataArgs
from hf_transfer.errors import HfTransferError

SAMPLERS = ("proportional", "temperature", "round_robin", "annealed")
LORA_EXPORTS = ("merged", "adapter")
# TextDataArgs options that are the recipe's own flags (one tokenizer and collator for every task) or that belong to
# other recipes (the source task's forgetting, per-domain analyses): not task keys.
SHARED_OPTIONS = ("max_seq_length", "pad_to_max_length")
NOT_TASK_OPTIONS = (*SHARED_OPTIONS, "source_eval_file", "domain_column")
FILE_OPTIONS = ("train_file", "validation_file", "test_file")
TASK_KEYS = ("name", "loss_weight", *(f.name for f in dataclasses.fields(TextDataArgs) if f.name not in NOT_TASK_OPTIONS))
# A task's name is a module name in the model (task_models.<name>), a metric prefix and a folder name.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class MultitaskArgs:
    # A path on the command line; a --config file may give the list itself (`tasks:` with the entries).
    tasks: str = field(
        metadata={"help": "YAML file listing the tasks: each a `name`, its data (the text recipes' data options by name: "
                  "train_file, validation_file, dataset_name, text_column, label_column, task_type, ...) and an "
                  "optional `loss_weight` (default 1.0). Paths are relative to the file. In a --config file, `tasks:` "
                  "may hold the list itself (paths relative to the working directory). See docs/multitask.md."}
    )
    task_sampler: str = field(
        default="proportional",
        metadata={"help": "Which task each batch comes from: proportional (to the task's training rows), temperature "
                  "(p ~ rows^(1/T), --sampler_temperature), round_robin (each task in turn) or annealed (proportional "
                  "at the start, equal shares at the end).", "choices": SAMPLERS},
    )
    sampler_temperature: float = field(
        default=2.0,
        metadata={"help": "--task_sampler temperature: T in p ~ rows^(1/T); 1 is proportional, larger evens the tasks out."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated (every task); batches pad to their longest."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to --max_seq_length (fixed shapes: TPU, CUDA graphs)."}
    )
    lora_export: str | None = field(
        default=None,
        metadata={"help": "--strategy lora: each task's folder (tasks/<name>) holds the adapters merged into a full model "
                  "(merged, the default) or the task's adapter alone (adapter).", "choices": LORA_EXPORTS},
    )
    # The task file, read and checked as the options are parsed.
    task_specs: list[TaskSpec] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.sampler_temperature <= 0:
            raise HfTransferError(f"--sampler_temperature must be > 0, got {self.sampler_temperature:g}; 1 samples in "
                                  "proportion to the task sizes, larger values even the tasks out")
        if self.max_seq_length < 1:
            raise HfTransferError(f"--max_seq_length must be >= 1, got {self.max_seq_length}")
        shared = {"max_seq_length": self.max_seq_length, "pad_to_max_length": self.pad_to_max_length}
        self.task_specs = read_task_file(self.tasks, shared)


@dataclass
class TaskSpec:
    """One entry of the task file: its name, its loss weight and its data options."""

    name: str
    loss_weight: float
    data: TextDataArgs


def read_task_file(tasks, shared: dict) -> list[TaskSpec]:
    """The tasks of --tasks, each checked (`shared`: the data options every task takes from the flags): a YAML file
    (paths in it relative to it), or the list itself where a --config file gives it (paths relative to the working
    directory, as every path in a config file)."""
    import yaml

    if isinstance(tasks, list):
        entries, base, source = tasks, Path.cwd(), "the --tasks list"
    else:
        file = Path(tasks)
        if not file.is_file():
            raise HfTransferError(f"--tasks {tasks} does not exist; pass the YAML file listing the tasks (docs/multitask.md)")
        try:
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise HfTransferError(f"--tasks {tasks} does not parse: {str(error).splitlines()[0]}") from error
        if not isinstance(content, dict) or set(content) != {"tasks"}:
            raise HfTransferError(f"--tasks {tasks} must be a mapping with one key, `tasks`, holding the list of tasks")
        entries, base, source = content["tasks"], file.parent, str(file)
    if not isinstance(entries, list) or not entries:
        raise HfTransferError(f"{source} lists no tasks; give `tasks:` at least one entry with a name and its data")
    specs: list[TaskSpec] = []
    for number, entry in enumerate(entries, start=1):
        spec = task_spec(entry, number, source, base, shared)
        if spec.name in [s.name for s in specs]:
            raise HfTransferError(f"task '{spec.name}' is listed twice in {source}; give every task its own name")
        specs.append(spec)
    return specs


def task_spec(entry, number: int, source: str, base: Path, shared: dict) -> TaskSpec:
    """Task number `number` of `source`, checked: its name, its keys and their types, its data (the data options'
    own checks, with the task named in the message); its relative paths are taken from `base`."""
    if not isinstance(entry, dict):
        raise HfTransferError(f"task {number} in {source} is not a mapping; write each task as `- name: ...` with its keys")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise HfTransferError(f"task {number} in {source} needs a `name` of letters, digits, _ or - (starting with a "
                              f"letter), got {name!r}")
    where = f"task '{name}' in {source}"
    if hasattr(nn.ModuleDict, name):  # the model keeps the task's head under its name
        raise HfTransferError(f"{where}: the name '{name}' is taken by torch's modules (a method of theirs); rename the task")
    unknown = sorted(set(entry) - set(TASK_KEYS))
    if unknown:
        shared_given = [key for key in unknown if key in SHARED_OPTIONS]
        hint = f" ({', '.join(shared_given)}: a flag of the recipe, shared by every task)" if shared_given else ""
        raise HfTransferError(f"{where}: unknown key(s) {', '.join(unknown)}{hint}; a task takes {', '.join(TASK_KEYS)}")
    if not (entry.get("train_file") or entry.get("dataset_name")):
        raise HfTransferError(f"{where} has no data; give it train_file (and validation_file) or dataset_name")
    weight = entry.get("loss_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise HfTransferError(f"{where}: loss_weight must be a number > 0, got {weight!r}")
    options = {key: value for key, value in entry.items() if key not in ("name", "loss_weight")}
    check_types(options, where)
    if options.get("task_type", "auto") not in TASK_TYPES:
        raise HfTransferError(f"{where}: task_type must be one of {', '.join(TASK_TYPES)}, got {options['task_type']!r}")
    for key in FILE_OPTIONS:
        if options.get(key):
            options[key] = str((base / Path(options[key]).expanduser()).resolve())
    try:
        data = TextDataArgs(**options, **shared)
    except HfTransferError as error:
        raise HfTransferError(f"{where}: {error}") from error
    return TaskSpec(name, float(weight), data)


_KINDS = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


def _fits(value, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


def check_types(options: dict, where: str) -> None:
    """Each value against its TextDataArgs field's type (`str | None`, `int`, `list[str] | None`, ...): YAML's own types
    are taken as they are, so a number where a name belongs is a one-line error here, not a TypeError later."""
    hints = typing.get_type_hints(TextDataArgs)
    for key, value in options.items():
        kinds = [kind for kind in typing.get_args(hints[key]) or (hints[key],) if kind is not type(None)]
        if value is None and len(kinds) < len(typing.get_args(hints[key]) or (hints[key],)):
            continue  # an optional value left empty
        kind = kinds[0]
        if typing.get_origin(kind) is list:
            inner = typing.get_args(kind)[0]
            fits, wanted = isinstance(value, list) and all(_fits(v, inner) for v in value), f"a list of {_KINDS[inner]}"
        else:
            fits, wanted = _fits(value, kind), _KINDS[kind]
        if not fits:
            raise HfTransferError(f"{where}: {key} must be {wanted}, got {value!r}")
