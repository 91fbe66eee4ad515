"""Audio classification (keyword spotting, speaker or language ID) with a wav2vec2, HuBERT, WavLM or Whisper encoder.

    accelerate launch recipes/audio_classification.py --train_dir clips/train --validation_dir clips/dev   # a folder per label
    accelerate launch recipes/audio_classification.py --config recipes/configs/audio_classification/wav2vec2_lora.yaml \
        --train_file clips.csv --label_column speaker                                                     # a table of paths
    accelerate launch recipes/audio_classification.py --model_name_or_path facebook/hubert-base-ls960 \
        --dataset_name <hub/dataset> --audio_column audio --label_column label --max_duration_seconds 1

From Python (a notebook): `from recipes.audio_classification import main; metrics = main([...])`.
The convolutional feature encoder stays frozen (--freeze_feature_encoder) under every strategy (Whisper: its conv stem).
A Whisper checkpoint (WhisperForAudioClassification: encoder + projector/classifier head) takes log-mel features in
30 s windows; `--whisper_window_seconds 1` pads short clips to 1 s instead (hf_transfer/models/whisper.py says what it costs).
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.audio import AudioAugmentArgs, AudioDataArgs, AudioLabelArgs
from hf_transfer.data.shift.spec import AudioShiftArgs
from hf_transfer.models.speech import SpeechModelArgs
from hf_transfer.models.whisper import WhisperArgs
from hf_transfer.run.task import Task
from hf_transfer.tasks.audio_classification import (
    build_audio_model,
    load_audio_task,
    prepare_audio_model,
)

TASK = Task(
    name="audio classification",
    arguments=(AudioDataArgs, AudioLabelArgs, AudioAugmentArgs, AudioShiftArgs, SpeechModelArgs, WhisperArgs),
    load=load_audio_task,  # Whisper checkpoints and the wav2vec2 family alike (hf_transfer/tasks/audio_classification.py)
    model_class="AutoModelForAudioClassification",
    # The Hugging Face audio-classification example's settings (lr 3e-5, 10% warmup); clips decode in the collator,
    # so the raw columns must reach it.
    defaults={
        "output_dir": "outputs/audio_classification", "model_name_or_path": "facebook/wav2vec2-base", "learning_rate": 3e-5,
        "num_train_epochs": 5, "warmup_steps": 0.1, "per_device_eval_batch_size": 32, "remove_unused_columns": False,
        "max_duration_seconds": 10.0, "train_sampling_strategy": "group_by_length",
    },
    build_model=build_audio_model,
    prepare_model=prepare_audio_model,
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
