"""The command line of every recipe: dataclass arguments through HfArgumentParser (from a YAML/JSON file and flags),
`--help`, and `run_cli`, which turns bad input into one line and exit status 2.

Precedence, lowest to highest: the dataclass defaults, the recipe's own defaults, the config file
(`--config run.yaml`), then flags on the command line.

Bad input is an `HfTransferError` of one line: argparse's own errors (unknown flag, bad choice, missing
value) with a pointer to --help instead of the usage block, and a ValueError from a dataclass's own
validation (`__post_init__`, e.g. TrainingArguments' consistency checks), chained as the cause. Any other
exception (a TypeError is a bug, not bad input) propagates with its traceback.

`--help` lists the options in groups, in the order the recipe gives its dataclasses with transformers'
TrainingArguments last: a group per dataclass, titled from `GROUP_TITLES` or the class name. Each
option's default is printed once: not where the help text states it already, not for `None`, and the
`--no_<flag>` complement of a true-by-default switch is one short line instead of a copy of the help.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from transformers import HfArgumentParser

from hf_transfer.errors import HfTransferError, report_error

# --help group titles of the shared dataclasses; a recipe's own are named from the class (TextDataArgs -> "text data options").
GROUP_TITLES = {
    "ModelArgs": "model options",
    "StrategyArgs": "transfer strategy options",
    "OutputArgs": "output folder options",
}
# A help text that says its default itself ("(default 8)", "Default: all-MiniLM...", "'epoch' (default)").
_STATES_DEFAULT = re.compile(r"\(default\b|\bdefault:", re.IGNORECASE)
# Those statements, removed where the recipe (or a config file) gives the option another default.
_STATED_DEFAULT = re.compile(r"\s*\(default\b[^)]*\)|\s*\bDefault:.*$", re.IGNORECASE | re.DOTALL)


def _is_training_arguments(dtype: type) -> bool:
    return any(base.__module__.startswith("transformers.") and base.__name__ == "TrainingArguments" for base in dtype.__mro__)


def group_title(dtype: type) -> str:
    if dtype.__name__ in GROUP_TITLES:
        return GROUP_TITLES[dtype.__name__]
    if _is_training_arguments(dtype):
        return f"Trainer options (transformers.{dtype.__name__})"
    stem = re.sub(r"(Args|Arguments)$", "", dtype.__name__) or dtype.__name__
    # Words of the CamelCase name; an acronym (LM) keeps its case, digits stay inside a word (Seq2Seq, Wav2Vec2).
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+(?:\d+[A-Z]?[a-z]+)*\d*|[A-Z]+\d*|\d+", stem)
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words) + " options"


def _name_groups(dataclass_types) -> list[type]:
    """Give each type its --help group (HfArgumentParser reads `_argument_group_name`); transformers' types go last."""
    for dtype in dataclass_types:
        if "_argument_group_name" not in vars(dtype):  # a name the class sets itself wins; a parent's does not
            dtype._argument_group_name = group_title(dtype)
    return sorted(dataclass_types, key=_is_training_arguments)  # stable: the recipe's order otherwise


class HelpFormatter(argparse.HelpFormatter):
    """Each option once, under its first name (the dash alias, --model-name-or-path, works but is not listed), and
    its default once."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=min(shutil.get_terminal_size().columns, 110))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if action.nargs == 0:
            return name
        if getattr(action.type, "__name__", "") == "string_to_bool":  # HfArgumentParser's booleans: --flag [true|false]
            return f"{name} [true|false]"
        return f"{name} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        """A short placeholder by type (INT, FLOAT, PATH, TEXT), not the option's name again in capitals."""
        if action.type in (int, float):
            return action.type.__name__.upper()
        if action.type in (str, None):
            return "PATH" if re.search(r"(_file|_dir|_path|^config)$", action.dest) else "TEXT"
        return "VALUE"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or "%(default)" in text:
            return text
        if getattr(action, "default_from_recipe", False):
            text = _STATED_DEFAULT.sub("", text).rstrip()  # the field's own default, which the recipe replaced
        elif _STATES_DEFAULT.search(text):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors are one-line `HfTransferError`s, with grouped, compact --help."""

    def __init__(self, dataclass_types, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("usage", "%(prog)s [--config FILE] [--OPTION VALUE ...]")
        kwargs.setdefault(
            "epilog", "Values come from the recipe's defaults (shown above), then --config FILE, then the command line."
        )
        super().__init__(_name_groups(list(dataclass_types)), **kwargs)
        self.dataclass_types = list(dataclass_types)  # parsed back into instances in the caller's order
        for action in self._actions:
            if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
                action.help = f"Same as --{action.dest} false."

    def error(self, message: str):
        # argparse names an option by all its spellings ("--unfreeze_unit/--unfreeze-unit"): one is enough.
        message = re.sub(r"(--\w+)(?:/--[\w-]+)+", r"\1", message)
        raise HfTransferError(f"{message}; see --help")


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise HfTransferError("--config needs a path to a YAML or JSON file")
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def load_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise HfTransferError(f"config file {path} does not exist; pass the path of a .yaml or .json file")
    try:
        text = file.read_text()
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise HfTransferError(f"config file {path} does not parse: {str(error).splitlines()[0]}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise HfTransferError(f"config file {path} must hold a mapping of option: value, not a {type(values).__name__}")
    return values


def _file_value(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """A config-file value as the option takes it: a list for a list option; a list for a number or switch is an error
    (it would reach the dataclass unconverted and fail there as a TypeError)."""
    takes_list = action.nargs in ("+", "*")
    if takes_list and not isinstance(value, (list, tuple)):
        return [value]
    scalar = action.type in (int, float) or getattr(action.type, "__name__", "") == "string_to_bool"
    if not takes_list and scalar and isinstance(value, (list, tuple, dict)):
        raise HfTransferError(f"option {key}{source} takes one value, not a {type(value).__name__}")
    return value


def parse_args(dataclass_types: tuple, argv: list[str] | None = None, defaults: dict[str, Any] | None = None) -> tuple:
    """Parse `argv` (default: sys.argv[1:]) into one instance of each dataclass type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _split_config_flag(argv)
    parser = make_parser(dataclass_types, defaults, config_path)
    namespace = parser.parse_args(argv)  # a bad flag or value: HfTransferError from ArgumentParser.error
    del namespace.config
    parsed = []
    for dtype in dataclass_types:
        names = {f.name for f in dtype.__dataclass_fields__.values() if f.init}
        try:
            parsed.append(dtype(**{k: getattr(namespace, k) for k in names if hasattr(namespace, k)}))
        except HfTransferError:
            raise
        except ValueError as error:  # the dataclass's own validation, e.g. TrainingArguments' consistency checks
            raise HfTransferError(str(error).strip().splitlines()[0]) from error
    return tuple(parsed)


def make_parser(dataclass_types: tuple, defaults: dict[str, Any] | None = None, config_path: str | None = None) -> ArgumentParser:
    """The parser of a recipe: its dataclasses' options with the recipe's defaults, then the config file's values, as
    the options' defaults (what --help shows)."""
    parser = ArgumentParser(dataclass_types)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of options; flags on the command line override it.")
    values = dict(defaults or {})
    if config_path:
        values.update(load_config_file(config_path))
    source = f" in {config_path}" if config_path else ""
    actions = {action.dest: action for action in parser._actions}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise HfTransferError(f"unknown option(s) {', '.join(unknown)}{source}; see --help for the names")
    for key, value in values.items():
        actions[key].required = False  # a value from the file satisfies a required flag
        # argparse converts string defaults with the option's type, so YAML's "5e-5" (a string) works.
        parser.set_defaults(**{key: _file_value(actions[key], key, value, source)})
        actions[key].default_from_recipe = True
    return parser


def run_cli(main: Callable[[list[str] | None], object]) -> None:
    """Run a recipe's `main` as a command: bad input is one line on stderr and exit status 2, no traceback.

    A launched run (several processes) leaves its process group here, at the end of the process, and not in
    `main`, so a notebook or a chain of recipes in one process (dapt, compare) can call `main` again.
    """
    from hf_transfer.run.launch import finish_processes

    try:
        main(None)
    except HfTransferError as error:
        report_error(error)
        sys.exit(2)
    finish_processes()
