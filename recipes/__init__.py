"""The recipes: one file per task, each runnable (`accelerate launch recipes/<task>.py`) and importable (`main`)."""
import importlib

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Task


def load_recipe(name: str):
    """The module of `recipes/<name>.py` (for compare and linear_probe), with a clear error for an unknown name."""
    try:
        module = importlib.import_module(f"recipes.{name}")
    except ModuleNotFoundError as error:
        if error.name not in (f"recipes.{name}", "recipes"):
            raise
        raise HfTransferError(f"no recipe named '{name}'; recipes are the files in recipes/ (e.g. sentiment)") from error
    if not isinstance(getattr(module, "TASK", None), Task):
        raise HfTransferError(f"recipes/{name}.py declares no TASK; compare and linear_probe take task recipes such as sentiment")
    return module
