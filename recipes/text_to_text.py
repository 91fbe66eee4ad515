"""Text to text (translation, summarisation, any paired text) with T5 or an encoder-decoder, and any transfer strategy.

    accelerate launch recipes/text_to_text.py --train_file train.jsonl --source_prefix "summarize: "   # columns e.g. text, summary
    accelerate launch recipes/text_to_text.py --config recipes/configs/text_to_text/t5_small_lora.yaml
    accelerate launch recipes/text_to_text.py --config recipes/configs/text_to_text/minilm_bert2bert_multi30k.yaml  # offline

The default model is google-t5/t5-small from the Hub. `--decoder_name_or_path` warm-starts an encoder-decoder
from two encoder checkpoints instead (Rothe et al. 2020; MiniLM -> MiniLM runs offline), and `--from_scratch`
gives that architecture random weights: the no-transfer baseline. Validation and test are scored on generated
text (BLEU, chrF, ROUGE); their predictions are written beside metrics.json.

From Python (a notebook): `from recipes.text_to_text import main; metrics = main([...])`.
"""
from hf_transfer.cli import run_cli
from hf_transfer.data.seq2seq import Seq2SeqDataArgs
from hf_transfer.models.seq2seq import EncoderDecoderArgs, build_seq2seq_model
from hf_transfer.run.task import Task
from hf_transfer.tasks.text_to_text import (
    keep_seq2seq_predictions,
    load_seq2seq_task,
    seq2seq_summary,
    write_seq2seq_predictions,
)

TASK = Task(
    name="text-to-text",
    arguments=(Seq2SeqDataArgs, EncoderDecoderArgs),
    load=load_seq2seq_task,
    model_class="AutoModelForSeq2SeqLM",
    # T5's fine-tuning LR is higher than an encoder's (the Hugging Face T5 examples use 1e-4 to 1e-3 with AdamW).
    # Greedy decoding keeps the per-epoch evaluation cheap; --generation_max_length defaults to --max_target_length.
    defaults={
        "output_dir": "outputs/text_to_text", "model_name_or_path": "google-t5/t5-small", "learning_rate": 3e-4,
        "num_train_epochs": 3, "per_device_eval_batch_size": 32, "predict_with_generate": True,
        "generation_num_beams": 1,
    },
    trainer_class="Seq2SeqTransferTrainer",
    training_arguments="Seq2SeqTrainingArguments",
    build_model=build_seq2seq_model,
    before_train=keep_seq2seq_predictions,
    after_save=write_seq2seq_predictions,
    metric="validation_bleu",
    labelled=False,
    summary=seq2seq_summary,
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
