"""Configuration: file values, recipe defaults and CLI flags in the right order; every shipped config parses."""
import importlib

import pytest
import yaml
from conftest import REPO

from hf_transfer import HfTransferError, parse_args
from hf_transfer.strategies import StrategyArgs

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*/*.yaml"))


def test_configs_are_shipped_for_every_strategy():
    shipped = {yaml.safe_load(p.read_text()).get("strategy") for p in CONFIGS if p.parent.name == "sentiment"}
    assert shipped >= {"full", "freeze", "feature_extraction", "gradual", "lora", "peft"}
    assert any("layer_lr_decay" in yaml.safe_load(p.read_text()) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_parses_to_its_values(path, monkeypatch):
    monkeypatch.chdir(REPO)  # configs name repo-relative paths (peft configs)
    recipe = importlib.import_module(f"recipes.{path.parent.name}")
    import torch

    # GPU configs (bf16) only validate where a GPU is, or with use_cpu (CPU bf16 autocast).
    values = yaml.safe_load(path.read_text())
    cpu_only = ["--use_cpu", "true"] if values.get("bf16") and not torch.cuda.is_available() else []
    try:
        parse = recipe.TASK.parse if hasattr(recipe, "TASK") else recipe.parse
        parsed = list(parse(["--config", str(path), *cpu_only]))
    except HfTransferError as error:
        if "shared/data" in str(error) and "does not exist" in str(error):
            pytest.skip(f"{path.name} reads ../shared/data, absent here: {error}")
        raise
    values = yaml.safe_load(path.read_text())
    for key, value in values.items():
        owners = [obj for obj in parsed if key in obj.__dataclass_fields__]
        assert owners, f"{key} is not an option of recipes/{path.parent.name}.py"
        got = getattr(owners[0], key)
        got = getattr(got, "value", got)  # enums such as eval_strategy
        if isinstance(value, float) or (isinstance(value, str) and isinstance(got, float)):
            assert got == pytest.approx(float(value)), key
        else:
            assert got == value, key


def test_cli_flags_override_the_file_which_overrides_recipe_defaults(tmp_path):
    from transformers import TrainingArguments

    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3e-4\nnum_train_epochs: 7\nstrategy: lora\nlora_r: 4\n")
    defaults = {"learning_rate": 1e-5, "num_train_epochs": 2, "seed": 11}
    strategy, train = parse_args((StrategyArgs, TrainingArguments), ["--config", str(config), "--lora_r", "16"], defaults)
    assert train.learning_rate == 3e-4  # file over recipe default (and YAML's "3e-4" string became a float)
    assert train.num_train_epochs == 7
    assert train.seed == 11  # recipe default where the file is silent
    assert strategy.strategy == "lora" and strategy.lora_r == 16  # flag over file


def test_json_config_and_equals_form(tmp_path):
    from transformers import TrainingArguments

    config = tmp_path / "run.json"
    config.write_text('{"strategy": "freeze", "freeze_bottom": 1, "output_dir": "x"}')
    strategy, train = parse_args((StrategyArgs, TrainingArguments), [f"--config={config}"])
    assert (strategy.strategy, strategy.freeze_bottom, train.output_dir) == ("freeze", 1, "x")


@pytest.mark.parametrize(
    "content, message",
    [
        ("learning_rat: 1e-4\n", r"unknown option\(s\) learning_rat in"),
        ("- a\n- b\n", r"must hold a mapping"),
        ("strategy: [unclosed\n", r"does not parse"),
        ("strategy: freeze\n", r"--strategy freeze needs --freeze_bottom"),
    ],
)
def test_bad_config_files_are_one_clear_error(tmp_path, content, message):
    from transformers import TrainingArguments

    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(HfTransferError, match=message):
        parse_args((StrategyArgs, TrainingArguments), ["--config", str(config)])


def test_missing_config_file():
    with pytest.raises(HfTransferError, match="config file /nope.yaml does not exist"):
        parse_args((StrategyArgs,), ["--config", "/nope.yaml"])


def test_a_dataclass_value_error_is_one_line_with_its_cause_and_a_type_error_is_a_bug():
    from dataclasses import dataclass

    @dataclass
    class Checked:
        ratio: float = 0.5

        def __post_init__(self):
            if not 0 <= self.ratio <= 1:
                raise ValueError(f"--ratio must be in [0, 1], got {self.ratio}\n(second line of detail)")

    @dataclass
    class Buggy:
        ratio: float = 0.5

        def __post_init__(self):
            self.ratio + "x"  # a programming error, not bad input

    with pytest.raises(HfTransferError, match=r"^--ratio must be in \[0, 1\], got 2.0$") as info:
        parse_args((Checked,), ["--ratio", "2"])
    assert isinstance(info.value.__cause__, ValueError)  # chained: HF_TRANSFER_DEBUG=1 shows where it came from
    with pytest.raises(TypeError):  # propagates with its traceback instead of becoming a user error
        parse_args((Buggy,), [])


def test_trainer_consistency_check_is_one_line(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(HfTransferError) as info:
        parse_args((TrainingArguments,), ["--output_dir", str(tmp_path), "--load_best_model_at_end", "true",
                                          "--eval_strategy", "epoch", "--save_strategy", "steps"])
    assert "\n" not in str(info.value) and isinstance(info.value.__cause__, ValueError)


def test_config_file_value_shapes(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lora_r: [4, 8]\n")
    with pytest.raises(HfTransferError, match=r"option lora_r in .*run.yaml takes one value, not a list"):
        parse_args((StrategyArgs,), ["--config", str(config)])
    config.write_text("strategy: freeze\nfreeze_stacks: encoder\n")  # one name for a list option: a list of one
    (strategy,) = parse_args((StrategyArgs,), ["--config", str(config)])
    assert strategy.freeze_stacks == ["encoder"]


def test_unparsable_config_file_chains_the_parser_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("strategy: [unclosed\n")
    with pytest.raises(HfTransferError, match="does not parse") as info:
        parse_args((StrategyArgs,), ["--config", str(config)])
    assert isinstance(info.value.__cause__, yaml.YAMLError)
