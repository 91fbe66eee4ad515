"""Data loading, one module per modality on a shared layer (io: sources and columns, labels, splits); each returns a DatasetDict ready for the Trainer and its collator."""
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"  # the embedded demo data (package data)
