"""Every recipe's --help states the defaults the recipe really uses (its own defaults replace the fields' ones)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hf_transfer.cli import make_parser
from hf_transfer.run.launch import recipe_defaults
from recipes import load_recipe

RECIPES = ["sentiment", "domain_adaptation", "text_to_text", "image_classification", "audio_classification",
           "speech_recognition", "whisper_speech_recognition", "continued_pretraining"]


def option_blocks(help_text: str) -> dict[str, str]:
    """--help's text of each option, by its first name, wrapped lines joined."""
    blocks, name = {}, None
    for line in help_text.splitlines():
        match = re.match(r"  (--\w+)", line)
        if match:
            name = match.group(1)
            blocks[name] = line
        elif name and line.startswith(" " * 10):
            blocks[name] += " " + line.strip()
        else:
            name = None
    return {k: re.sub(r"\s+", " ", v).replace("- ", "-") for k, v in blocks.items()}


@pytest.mark.parametrize("name", RECIPES)
def test_help_shows_each_default_the_recipe_uses(name):
    task = load_recipe(name).TASK
    parser = make_parser(task.argument_types(), recipe_defaults(**task.defaults))
    blocks = option_blocks(parser.format_help())
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config") or isinstance(action, argparse._StoreFalseAction):
            continue
        block = blocks[action.option_strings[0]]
        shown = re.search(r"\(default: (.*)\)$", block)
        if getattr(action, "default_from_recipe", False):
            assert shown, f"{name}: {action.dest} has the recipe's default {action.default!r}, not shown: {block}"
            text_before = block[: shown.start()]
            assert not re.search(r"\(default\b|\bdefault:", text_before, re.IGNORECASE), f"{name}: two defaults: {block}"
        if shown:
            real = str(action.default)  # as argparse prints %(default)s
            assert shown.group(1).replace(" ", "") == real.replace(" ", ""), f"{name}: {action.dest}: {block}"
            checked += 1
    assert checked > 20


def test_help_and_parsed_values_agree_on_the_sampler_and_the_model():
    audio = load_recipe("audio_classification").TASK
    blocks = option_blocks(make_parser(audio.argument_types(), recipe_defaults(**audio.defaults)).format_help())
    args = audio.parse(["--output_dir", "unused", "--train_dir", str(Path(__file__).parent)])
    assert args.training.train_sampling_strategy == "group_by_length"
    assert blocks["--train_sampling_strategy"].endswith("(default: group_by_length)")
    assert "'random' (default)" not in blocks["--train_sampling_strategy"]
    blocks = option_blocks(make_parser(audio.argument_types(), recipe_defaults(**audio.defaults)).format_help())
    assert "all-MiniLM" not in blocks["--model_name_or_path"]
    assert blocks["--model_name_or_path"].endswith(f"(default: {audio.defaults['model_name_or_path']})")
