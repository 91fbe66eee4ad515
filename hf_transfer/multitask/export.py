"""Each task's standalone model, `tasks/<name>/` in the output folder, with the tokenizer and a model card.

A task folder is the task's own classifier: the shared encoder with the task's head, a standard transformers model
(its config holds the task's label names) that `AutoModelForSequenceClassification.from_pretrained` and
`pipeline("text-classification")` load and the text recipes take as a starting model. Under LoRA, --lora_export
merged (the default) merges the adapters into the encoder first, so every folder is a full model; adapter saves each
task's adapter alone (the encoder's LoRA weights and the task's head, with its config), loaded by peft over the base
model. Its card (hf_transfer/sharing/cards.py, the same as a single-task run's) names the tasks it trained with.

The output folder keeps the whole multitask model (its weights, or under LoRA its adapters: what the run resumes
from) and a short card of its own listing the tasks.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from hf_transfer.multitask.trainer import MAIN_SCORES

# What a task's card repeats of the run's results, beside the task's own scores.
RUN_FACTS = ("epochs", "global_step", "world_size", "wall_time_s", "peak_cpu_memory_gb", "peak_gpu_memory_gb")


def save_task_models(model, tokenizer, folders: dict, lora_export: str | None, strategy):
    """Each task's model into its folder (name -> Path) with the tokenizer; returns the model after it (LoRA merged:
    the merged multitask model, which the caller keeps in place of the peft one) and how the tasks were saved: full,
    merged or adapter."""
    from peft import PeftModel

    saved = "full"
    if isinstance(model, PeftModel):
        if (lora_export or "merged") == "adapter":
            for name, folder in folders.items():
                save_task_adapter(model.get_base_model().task_models[name], strategy, folder)
                tokenizer.save_pretrained(folder)
            return model, "adapter"
        model, saved = model.merge_and_unload(), "merged"
    for name, folder in folders.items():
        model.task_models[name].save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return model, saved


def save_task_adapter(task_model, strategy, folder: Path) -> None:
    """The adapter of one task's model, whose LoRA layers peft put into the shared encoder: a fresh model of its
    architecture gets the same LoRA set-up (the strategy, with this model's own head trained whole), takes the trained
    weights, and saves its adapter with the trained model's config (sharing/adapters.py)."""
    from hf_transfer.sharing.adapters import save_adapter_config
    from hf_transfer.strategies import apply_strategy

    standalone = apply_strategy(type(task_model)(task_model.config), strategy)
    standalone.get_base_model().load_state_dict(task_model.state_dict())
    standalone.save_pretrained(folder)
    save_adapter_config(standalone, folder)


def export_tasks(task, trainer, args, results: dict, task_args: dict) -> dict[str, Path]:
    """After the run's own save (rank 0): every task's folder and card, then the output folder's card. `task_args`:
    each task's options as `multitask.task.task_arguments` gives them, their output_dir the task's folder."""
    from accelerate.utils import extract_model_from_parallel

    from hf_transfer.multitask.spec import MultitaskArgs
    from hf_transfer.sharing.adapters import peft_settings

    out = Path(trainer.args.output_dir)
    folders = {name: Path(options.training.output_dir) for name, options in task_args.items()}
    remove_earlier_exports(out / "tasks")
    model = extract_model_from_parallel(trainer.model)
    adapter = peft_settings(model)
    exported, saved = save_task_models(model, trainer.processing_class, folders, args[MultitaskArgs].lora_export,
                                       args.strategy)
    if exported is not model:
        trainer.model = exported  # merged in place: the peft wrapper is spent
    for name, folder in folders.items():
        task_card(task, trainer, task_args[name], results, name, saved, adapter).save(folder / "README.md")
    (out / "README.md").write_text(run_card(args, results, saved), encoding="utf-8")
    return folders


def remove_earlier_exports(folder: Path) -> None:
    """The task folders an earlier run in this output folder exported (--overwrite_output_dir), so that none of a task
    this run does not have is left; anything else there is not this project's and stays."""
    for path in folder.glob("*/"):
        if (path / "config.json").is_file():
            shutil.rmtree(path)


def task_results(results: dict, name: str, data) -> dict:
    """Task `name`'s view of the run's results, as a single-task run would have recorded them: its scores without
    the task's prefix (`validation_<name>_accuracy` -> `validation_accuracy`), its data's report and size."""
    return {**data.report, **{key: results[key] for key in RUN_FACTS if key in results}, **own_scores(results, name),
            "train_examples": len(data.datasets["train"])}


def own_scores(results: dict, name: str) -> dict:
    """Task `name`'s scores in a multitask run's results, named as a single-task run names them
    (`validation_<name>_accuracy` -> `validation_accuracy`)."""
    from hf_transfer.sharing.cards import SCORES

    return {f"{split}_{score}": results[f"{split}_{name}_{score}"] for split in ("validation", "test") for score in
            ("loss", *SCORES) if f"{split}_{name}_{score}" in results}


def task_card(task, trainer, args, results: dict, name: str, saved: str, adapter: dict | None):
    """Task `name`'s model card: the single-task card (sharing/cards.py) of its own data and scores, with a line on
    the tasks it trained with."""
    import torch

    from hf_transfer.sharing.cards import build_card

    data = trainer.tasks[name]
    others = [other for other in results.get("tasks", []) if other != name]
    trained_with = f"together with {', '.join(f'`{o}`' for o in others)}" if others else "alone"
    note = (f"Task `{name}` of a multitask run, trained {trained_with}: one shared encoder, one head per task, each "
            f"batch from one task ({results.get('task_sampler')} task sampling). This folder is the `{name}` task's "
            "classifier alone: the shared encoder with its own head.")
    card_task = dataclasses.replace(task, metric="validation_accuracy", card_notes=lambda a, r: {"model": [note]})
    device = trainer.args.device
    device = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        {"cpu": "CPU", "mps": "Apple MPS"}.get(device.type, device.type)
    return build_card(card_task, args, data, task_results(results, name, data), saved=saved, adapter=adapter,
                      device=device)


def run_card(args, results: dict, saved: str) -> str:
    """The output folder's README.md: what the folder holds, and each task's main score and folder."""
    strategy = args.strategy.strategy
    rows = []
    for name in results.get("tasks", []):
        kind = results["task_types"][name]
        score, value = MAIN_SCORES[kind], results.get(f"validation_{name}_{MAIN_SCORES[kind]}")
        labels = results.get("task_label_names", {}).get(name) or [results.get("task_targets", {}).get(name, "")]
        shown = f"{score} {value:.4f}" if isinstance(value, float) else "n/a"
        rows.append(f"| `{name}` | {kind} | {', '.join(map(str, labels))} | {results['task_train_examples'][name]:,} | "
                    f"{shown} | [tasks/{name}](tasks/{name}) |")
    held = "the adapters: LoRA weights and heads, for peft" if strategy == "lora" else "its weights"
    exported = {"full": "a full model", "merged": "a full model, the adapters merged in",
                "adapter": "the task's adapter (peft) with its config"}[saved]
    macro = results.get("validation_macro_score")
    macro = f"\nMacro score (the mean of the tasks' main scores): {macro:.4f}.\n" if isinstance(macro, float) else ""
    first = results.get("tasks", ["task"])[0]
    regression = ', function_to_apply="none"' if results.get("task_types", {}).get(first) == "regression" else ""
    usage = "" if saved == "adapter" else (
        f'```python\nfrom transformers import pipeline\n\nclassifier = pipeline("text-classification", '
        f'model="{args.training.output_dir}/tasks/{first}"{regression})\n```\n')
    return f"""---
library_name: transformers
tags:
- hf_transfer
- transfer-learning
- multitask
- strategy-{strategy}
---

# {Path(args.training.output_dir).name}: {len(rows)} tasks, one shared encoder

Trained with hf_transfer's `multitask` recipe (strategy `{strategy}`, `{results.get('task_sampler')}` task sampling): one
encoder shared by every task, one head per task, each batch from one task.

This folder holds the whole multitask model ({held}) in the form of its checkpoints, which
`--resume_from_checkpoint last` continues a run from. Each task's standalone model is its folder under `tasks/`:
{exported}, with its tokenizer and card.

| task | type | labels | training rows | validation | folder |
|---|---|---|---:|---|---|
{chr(10).join(rows)}
{macro}
{usage}"""
