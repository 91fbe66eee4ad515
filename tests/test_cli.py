"""The command line: argparse errors as one line and exit 2, a grouped --help with each default once, the debug traceback."""
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from conftest import REPO, one_line_error

from hf_transfer import HfTransferError, parse_args
from hf_transfer.cli import run_cli
from hf_transfer.strategies import StrategyArgs
from recipes import sentiment


def test_cli_errors_are_one_line_and_help_is_grouped_without_importing_torch(capsys, monkeypatch):
    """The one subprocess test: the real entry point, in a fresh interpreter that shows what `import hf_transfer` loads."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "100"}
    env.pop("HF_TRANSFER_DEBUG", None)
    bad = subprocess.run([sys.executable, "recipes/sentiment.py", "--strategy", "bogus"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr[-2000:]
    line = one_line_error(bad.stderr)
    assert line.startswith("error: argument --strategy: invalid choice: 'bogus'") and line.endswith("; see --help"), line
    assert "usage:" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    # `import hf_transfer` alone loads neither torch nor transformers (sys.modules of the fresh interpreter);
    # then the recipe's --help, which must be the help the in-process tests below take apart.
    probe = ("import sys, runpy, hf_transfer; print('heavy:', [m for m in ('torch', 'transformers') if m in sys.modules]); "
             "sys.argv = ['sentiment.py', '--help']; runpy.run_path('recipes/sentiment.py', run_name='__main__')")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    heavy, out = shown.stdout.split("\n", 1)
    assert heavy == "heavy: []", heavy
    assert out.splitlines()[:2] == ["usage: sentiment.py [--config FILE] [--OPTION VALUE ...]", ""]  # one line, no option list
    headings = ["model options:", "text data options:", "baseline options:", "transfer strategy options:",
                "Trainer options (transformers.TrainingArguments):"]
    positions = [out.index(f"\n{h}\n") for h in headings]
    assert positions == sorted(positions), "groups out of order: the recipe's, then the strategy's, then the Trainer's"
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width: the same width on both sides
    monkeypatch.setattr(sys, "argv", ["sentiment.py"])  # the program name in the usage line
    assert out == _help(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "bogus"], "argument --strategy: invalid choice: 'bogus' (choose from"),
    (["--unfreeze_unit"], "argument --unfreeze_unit: expected one argument"),
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1"),
    (["--lora_r", "four"], "argument --lora_r: invalid int value: 'four'"),
    (["--unfreeze-unit", "hour"], "argument --unfreeze_unit: invalid choice: 'hour'"),  # one spelling named, not both
])
def test_argparse_errors_are_one_line_errors(argv, message, capsys):
    with pytest.raises(HfTransferError) as info:
        parse_args((StrategyArgs,), argv)
    text = str(info.value)
    assert message in text and text.endswith("; see --help") and "\n" not in text, text
    assert "/--" not in text and capsys.readouterr().err == ""  # no usage block printed on the way


def test_run_cli_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("HF_TRANSFER_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["sentiment.py", "--strategy", "bogus"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sentiment.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert one_line_error(err).startswith("error: argument --strategy: invalid choice") and len(err.splitlines()) == 1


def _failing_main(argv):
    try:
        open("/nonexistent/weights.bin")
    except OSError as error:
        raise HfTransferError("cannot read the weights") from error


def test_debug_variable_shows_the_chained_traceback(monkeypatch, capsys):
    monkeypatch.delenv("HF_TRANSFER_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        run_cli(_failing_main)
    assert capsys.readouterr().err == "error: cannot read the weights\n"

    monkeypatch.setenv("HF_TRANSFER_DEBUG", "1")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_failing_main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "FileNotFoundError" in err and "direct cause of the following exception" in err and "_failing_main" in err
    assert err.strip().splitlines()[-1] == "error: cannot read the weights"  # the line stays last and clean


def _help(capsys) -> str:
    from hf_transfer.run.launch import recipe_defaults

    with pytest.raises(SystemExit) as exit_info:
        parse_args(sentiment.TASK.argument_types(), ["--help"], recipe_defaults(**sentiment.TASK.defaults))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_prints_each_option_and_its_default_once(capsys):
    out = _help(capsys)
    lines = out.splitlines()
    entries = {}  # option -> its help entry (invocation line and continuation lines)
    current = None
    for line in lines:
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            assert current not in entries, f"{current} listed twice"
            entries[current] = line
        elif line.startswith("    ") and current:
            entries[current] += " " + line.strip()
        else:
            current = None
    assert "--model-name-or-path" not in out  # the dash alias works but is not listed beside every option
    for option, entry in entries.items():
        assert len(re.findall(r"\(default|default:", entry, re.IGNORECASE)) <= 1, entry
        assert "(default: None)" not in entry, entry
    # Help texts that state their default are not given a second (and contradicting) one.
    assert "(default 8)" in entries["--lora_r"] and "(default:" not in entries["--lora_r"]
    assert "(default: None)" not in entries["--model_name_or_path"]
    # The --no_ complement of a true-by-default switch is one short line, not a copy with "(default: False)".
    assert entries["--no_use_safetensors"].split(None, 1)[1] == "Same as --use_safetensors false."
    assert "(default: True)" in entries["--use_safetensors"]
    # The recipe's own defaults are what is shown.
    assert "(default: 0.0001)" in entries["--learning_rate"] and "(default: outputs/sentiment)" in entries["--output_dir"]


def test_help_groups_follow_the_recipe_with_the_trainer_last(capsys):
    from transformers import TrainingArguments

    @dataclass
    class MaskedLMDataArgs:
        block_size: int = field(default=128, metadata={"help": "Tokens per block."})

    with pytest.raises(SystemExit):
        parse_args((TrainingArguments, MaskedLMDataArgs, StrategyArgs), ["--help"])
    out = capsys.readouterr().out
    order = [out.index(h) for h in ("\nmasked LM data options:", "\ntransfer strategy options:", "\nTrainer options")]
    assert order == sorted(order)
    assert "(default: 128)" in out
    # Parsing returns the instances in the order of the types given.
    train, data, strategy = parse_args((TrainingArguments, MaskedLMDataArgs, StrategyArgs), ["--block_size", "64"])
    assert isinstance(train, TrainingArguments) and data.block_size == 64 and strategy.strategy == "full"


def test_package_names_resolve_on_first_use():
    import hf_transfer

    for name in hf_transfer.__all__:  # each export is the object its defining module holds under that name
        value = getattr(hf_transfer, name)
        homes = [m for key, m in sys.modules.items() if key.startswith("hf_transfer.") and vars(m).get(name) is value]
        assert homes, f"hf_transfer.{name} is no submodule's {name}"
        if isinstance(value, type) or callable(value):
            assert value.__name__ == name and sys.modules[value.__module__] in homes, (name, value.__module__)
    assert hf_transfer.layers is sys.modules["hf_transfer.layers"]  # a submodule as an attribute, imported on first use
    assert hf_transfer.layers.layer_groups is hf_transfer.layer_groups
    assert set(hf_transfer.__all__) <= set(dir(hf_transfer))
    with pytest.raises(AttributeError):
        hf_transfer.no_such_name
