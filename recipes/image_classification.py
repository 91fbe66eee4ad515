"""Image classification with ViT (or any image model the layer map knows; others run with --strategy full).

    accelerate launch recipes/image_classification.py --train_dir images/train --validation_dir images/val   # a folder per label
    accelerate launch recipes/image_classification.py --config recipes/configs/image_classification/vit_base_lora.yaml \
        --train_file images.csv --label_column species                                                       # a table of paths
    accelerate launch recipes/image_classification.py --dataset_name <hub/dataset> --image_column img --label_column label

From Python (a notebook): `from recipes.image_classification import main; metrics = main([...])`.
The default model is google/vit-base-patch16-224-in21k from the Hub. Its own image processor (AutoImageProcessor)
sets the input size and normalisation and is saved with the model. Images are checked before training (bad
files skipped and counted, or an error with --on_bad_image error) and decoded in the collator; training images
get a random resized crop and a horizontal flip (--random_resized_crop, --crop_scale, --horizontal_flip).
`--from_scratch` gives the checkpoint's architecture random weights: the no-transfer baseline.
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.image import ImageAugmentArgs, ImageDataArgs
from hf_transfer.data.shift.spec import ImageShiftArgs
from hf_transfer.run.task import Task
from hf_transfer.tasks.image_classification import load_image_classification_task

TASK = Task(
    name="image classification",
    arguments=(ImageDataArgs, ImageAugmentArgs, ImageShiftArgs),
    load=load_image_classification_task,
    model_class="AutoModelForImageClassification",
    # The Hugging Face image-classification example's settings (lr 2e-5, 5 epochs, 10% warm-up); images decode in the
    # collator, so the raw columns must reach it.
    defaults={
        "output_dir": "outputs/image_classification", "model_name_or_path": "google/vit-base-patch16-224-in21k",
        "learning_rate": 2e-5, "num_train_epochs": 5, "warmup_steps": 0.1, "per_device_train_batch_size": 32,
        "remove_unused_columns": False,
    },
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
