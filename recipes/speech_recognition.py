"""Speech recognition (CTC) with a wav2vec2, HuBERT or WavLM encoder: a character vocabulary, greedy decoding, WER/CER.

    accelerate launch recipes/speech_recognition.py --train_file train.csv --validation_file dev.csv   # columns: path, text
    accelerate launch recipes/speech_recognition.py --config recipes/configs/speech_recognition/wav2vec2_full.yaml \
        --dataset_name hf-internal-testing/librispeech_asr_dummy --dataset_config_name clean --train_split_name validation
    accelerate launch recipes/speech_recognition.py --model_name_or_path facebook/wav2vec2-base-960h \
        --tokenizer_name_or_path facebook/wav2vec2-base-960h --text_case upper --train_file train.csv  # keep its CTC head

From Python (a notebook): `from recipes.speech_recognition import main; metrics = main([...])`.
The vocabulary is built from the training transcripts and saved with the processor in --output_dir.
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.audio import AudioAugmentArgs, AudioDataArgs
from hf_transfer.data.transcripts import TranscriptArgs
from hf_transfer.models.speech import SpeechModelArgs
from hf_transfer.run.task import Task
from hf_transfer.tasks.audio_classification import prepare_speech_model
from hf_transfer.tasks.speech_recognition import load_ctc_task

TASK = Task(
    name="speech recognition (CTC)",
    arguments=(AudioDataArgs, TranscriptArgs, AudioAugmentArgs, SpeechModelArgs),
    load=load_ctc_task,
    model_class="AutoModelForCTC",
    # The Hugging Face CTC example's choices: clips over 20 s skipped (a cut would lose transcribed words),
    # length-grouped batches (little padding, and greedy decoding sees few padded frames).
    defaults={
        "output_dir": "outputs/speech_recognition", "model_name_or_path": "facebook/wav2vec2-base", "learning_rate": 1e-4,
        "num_train_epochs": 30, "warmup_steps": 0.1, "per_device_eval_batch_size": 32, "remove_unused_columns": False,
        "max_duration_seconds": 20.0, "long_audio": "skip", "train_sampling_strategy": "group_by_length",
    },
    prepare_model=prepare_speech_model,
    metric="validation_wer",
    labelled=False,
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
