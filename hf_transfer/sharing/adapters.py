"""peft adapters in an output folder: their settings for the card, saved alone or merged into the base weights.
"""
from __future__ import annotations

from pathlib import Path


def peft_settings(model) -> dict | None:
    """A peft model's method and settings (r, alpha, targets, the modules trained whole), or None for a plain model."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    config = model.peft_config[model.active_adapter]
    settings = {"method": str(getattr(config.peft_type, "value", config.peft_type)).lower()}
    for key in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save"):
        value = getattr(config, key, None)
        if value is not None:
            settings[key] = sorted(value) if isinstance(value, (set, list, tuple)) else value
    return settings


def save_adapter_config(model, out: Path) -> None:
    """The trained model's config beside the adapter: its label names (id2label, label2id) and head sizes, which
    the base model's own config lacks, so a reload gets them back (see the card's "How to use"); and for a model that
    generates, its generation config."""
    import copy

    base = model.get_base_model()
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]  # what save_pretrained of the full model would write
    config.save_pretrained(out)
    if base.can_generate():  # the run's generation settings (start token, length, beams), as a full model keeps them
        base.generation_config.save_pretrained(out)


def merge_adapter(model, out: Path):
    """--merge_lora: merge the adapter into the base weights and save a full model in its place; None if the peft
    method cannot merge (the adapter is then kept, with a note)."""
    try:
        merged = model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as error:
        print(f"note: --merge_lora: this peft method cannot be merged ({type(error).__name__}); the adapter was saved "
              "instead", flush=True)
        return None
    for name in ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json"):
        (out / name).unlink(missing_ok=True)
    merged.save_pretrained(out)
    return merged
