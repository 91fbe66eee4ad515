"""Run by test_distributed.py under `accelerate launch` (2 CPU processes): gradual unfreezing with DDP.

Each rank writes a digest of its final weights and which layer groups moved, so the test can check that
the ranks stayed identical (DDP all-reduced every group it unfroze) and that every group trained.
"""
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from conftest import make_tokenizer, review_rows  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

from hf_transfer import StrategyArgs, TransferTrainer, layer_groups  # noqa: E402
from hf_transfer.run.launch import finish_processes  # noqa: E402


def main(out: Path) -> None:
    tokenizer = make_tokenizer(out / "tok")
    rows = review_rows(64, seed=5)
    data = Dataset.from_dict({**tokenizer([t for t, _ in rows]), "labels": [int(l == "positive") for _, l in rows]})
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=37, max_position_embeddings=64))
    start = {g.name: [p.detach().clone() for p in g.parameters] for g in layer_groups(model)}
    strategy = StrategyArgs(strategy="gradual", unfreeze_every=2, unfreeze_unit="step", layer_lr_decay=0.9)
    args = TrainingArguments(output_dir=str(out / "run"), per_device_train_batch_size=4, learning_rate=1e-3,
                             num_train_epochs=1, save_strategy="no", report_to="none", use_cpu=True,
                             dataloader_pin_memory=False, logging_steps=1, disable_tqdm=True)
    trainer = TransferTrainer(model=model, args=args, strategy=strategy, train_dataset=data,
                              data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    moved = [g.name for g in layer_groups(model)
             if any(not torch.equal(p, q) for p, q in zip(g.parameters, start[g.name]))]
    rank = trainer.args.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({
        "digest": digest, "moved": moved, "world_size": trainer.args.world_size, "steps": trainer.state.global_step,
    }))
    finish_processes()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
