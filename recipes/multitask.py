"""Multitask transfer: one shared encoder, one head per task, trained in one run (text classification and regression).

    python recipes/multitask.py --tasks recipes/configs/multitask/sentiment_tasks.yaml --output_dir outputs/multitask
    accelerate launch recipes/multitask.py --tasks tasks.yaml --strategy lora --task_sampler temperature

Each task of the --tasks file is loaded and built as recipes/sentiment.py would load and build it alone; every batch
comes from one task (--task_sampler). The output folder holds the whole multitask model and, in tasks/<name>/, each
task's standalone model (docs/multitask.md). From Python: `from recipes import multitask; metrics = multitask.main([...])`.
"""
from hf_transfer.cli import run_cli
from hf_transfer.multitask.task import multitask_task
from hf_transfer.tasks.text_classification import (
    build_text_classifier,
    load_text_classification_task,
)

TASK = multitask_task(load_one=load_text_classification_task, build_one=build_text_classifier)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
