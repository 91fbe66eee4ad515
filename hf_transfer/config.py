"""Recipe configuration: dataclass arguments through HfArgumentParser, from a YAML/JSON file and CLI flags.

Precedence, lowest to highest: the dataclass defaults, the recipe's own defaults, the config file
(`--config run.yaml`), then flags on the command line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import HfTransferError


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
        raise HfTransferError(f"config file {path} does not parse: {str(error).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise HfTransferError(f"config file {path} must hold a mapping of option: value, not a {type(values).__name__}")
    return values


def parse_args(dataclass_types: tuple, argv: list[str] | None = None, defaults: dict[str, Any] | None = None) -> tuple:
    """Parse `argv` (default: sys.argv[1:]) into one instance of each dataclass type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _split_config_flag(argv)
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", help="YAML or JSON file of options; flags on the command line override it.")
    values = dict(defaults or {})
    if config_path:
        values.update(load_config_file(config_path))
    actions = {action.dest: action for action in parser._actions}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise HfTransferError(
            f"unknown option(s) {', '.join(unknown)}{' in ' + config_path if config_path else ''}; see --help for the names"
        )
    for key, value in values.items():
        actions[key].required = False  # a value from the file satisfies a required flag
        # argparse converts string defaults with the option's type, so YAML's "5e-5" (a string) works.
        parser.set_defaults(**{key: value})
    try:
        namespace = parser.parse_args(argv)
        del namespace.config
        parsed = []
        for dtype in dataclass_types:
            names = {f.name for f in dtype.__dataclass_fields__.values() if f.init}
            parsed.append(dtype(**{k: getattr(namespace, k) for k in names if hasattr(namespace, k)}))
    except HfTransferError:
        raise
    except (ValueError, TypeError) as error:  # e.g. TrainingArguments' own consistency checks
        raise HfTransferError(str(error).strip().splitlines()[0]) from None
    return tuple(parsed)
