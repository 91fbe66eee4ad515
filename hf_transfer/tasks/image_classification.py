"""The image-classification task's `load` step: image processor, label folders or tables, augmentation.
"""
from __future__ import annotations

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData
from hf_transfer.tasks.shift import shift_plan, with_shift

# Models whose position embeddings fix the input size: an image processor of another size fails at the first step.
FIXED_SIZE_IMAGE_MODELS = ("vit", "deit", "vit_msn", "vit_mae")


def check_training_args(train_args) -> None:
    """Options that cannot work with images decoded in the collator."""
    if train_args.remove_unused_columns:
        raise HfTransferError(
            "the image recipe decodes images in the collator, which needs the raw columns: pass --remove_unused_columns false"
        )
    if getattr(train_args, "train_sampling_strategy", None) == "group_by_length":
        raise HfTransferError("--train_sampling_strategy group_by_length groups texts or clips by length; images have "
                              "none: use random")


def load_image_classification_task(args: Args) -> TaskData:
    """Image classification: the checkpoint's own image processor (size, normalisation), images checked up front and
    decoded, augmented and processed lazily in the collator."""
    from transformers import AutoImageProcessor

    from hf_transfer.data.image import (
        ImageAugmentArgs,
        ImageCollator,
        ImageDataArgs,
        load_image,
        load_image_classification,
        processor_output_size,
    )
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.loading import load_config

    check_training_args(args.training)
    config = load_config(args.model)
    args.strategy.check_config(config)  # an architecture the layer map lacks fails now (or runs with --strategy full)
    try:
        processor = AutoImageProcessor.from_pretrained(args.model.model_name_or_path, **args.model.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(
            f"cannot load the image processor of '{args.model.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(an image checkpoint has a preprocessor_config.json)"
        ) from error
    size, expected = processor_output_size(processor), getattr(config, "image_size", None)
    if config.model_type in FIXED_SIZE_IMAGE_MODELS and isinstance(expected, int) and size != (expected, expected):
        raise HfTransferError(
            f"the image processor gives {size[0]}x{size[1]} images but the model takes {expected}x{expected}; "
            "save the checkpoint with a processor of the model's size"
        )
    data = load_image_classification(args[ImageDataArgs], seed=args.training.seed)
    config.id2label, config.label2id = data.id2label, data.label2id
    epoch = TrainingEpoch()  # keys each training row's crop, flip and shift draws (hf_transfer/data/randomness.py)
    shift = shift_plan(args, epoch)  # --synthetic_shift, --eval_shift (hf_transfer/data/shift); None without them
    task_data = TaskData(
        datasets=data.datasets,
        collator=ImageCollator(processor, augment=args[ImageAugmentArgs], seed=args.training.seed, shift=shift, epoch=epoch),
        processing_class=processor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, **data.report},
        callbacks=[epoch],
    )
    return with_shift(task_data, shift, decode=lambda row: load_image(row["image"]))
