"""Domain adaptation: train on a labelled source domain while adapting to an unlabelled target domain.

    python recipes/domain_adaptation.py --train_file books.csv --target_file kitchen.csv   # mmd, the default
    python recipes/domain_adaptation.py --train_file ../shared/data/amazon_multidomain/books \\
        --target_file ../shared/data/amazon_multidomain/kitchen --adaptation coral --strategy lora --learning_rate 5e-4

The source takes the sentiment recipe's options and column rules; the target needs the source's text column, and
its labels (when present) only score the run. Every batch holds source rows and `--target_per_source` target rows
per source row; the method's loss (`--adaptation mmd|dann|coral|domain_norm|self_training|mlm`, default mmd, several
joined by +; `--adaptation_weight`) is added to the source loss by the trainer, and each term is logged (`task_loss`,
`adaptation_loss`, `mlm_loss`, ...). `--adaptation source_only` is the reference (docs/domain_adaptation.md). Reported: source validation accuracy beside target accuracy, and the proxy A-distance before and after.

Synthetic target conditions (docs/shift.md, "With domain adaptation"): `--synthetic_shift SPEC` shifts the source's
training rows toward the target's condition (`--synthetic_shift_role source`, the default with target data), or, with
no target data, a shifted copy of the source's training texts stands in as the target (`target`); `--eval_shift`
scores shifted copies of the source validation and of the scored target.

    python recipes/domain_adaptation.py --train_file books.csv --synthetic_shift typos:0.5 --adaptation coral
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.domains import DomainDataArgs
from hf_transfer.run.task import Task
from hf_transfer.tasks.domain_adaptation import (
    AdaptationArgs,
    DomainShiftArgs,
    adaptation_card_notes,
    adaptation_lines,
    diagnose_after,
    diagnose_before,
    load_domain_adaptation_task,
    prepare_adaptation_model,
)

TASK = Task(
    name="domain_adaptation",
    arguments=(DomainDataArgs, AdaptationArgs, DomainShiftArgs),
    load=load_domain_adaptation_task,
    model_class="AutoModelForSequenceClassification",
    # remove_unused_columns off: each training row carries the target rows it brings (`target_index`) and evaluation
    # rows their `domain`, which the model's forward does not take; the collator and the trainer's objectives do.
    # Random batches, as the sentiment recipe (benchmarks/batch_order.py); group_by_length is the speed option.
    defaults={"output_dir": "outputs/domain_adaptation", "learning_rate": 1e-4, "num_train_epochs": 2,
              "remove_unused_columns": False},
    prepare_model=prepare_adaptation_model,
    before_train=diagnose_before,
    after_train=diagnose_after,
    summary=adaptation_lines,
    card_notes=adaptation_card_notes,
    metric="target_accuracy",
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
