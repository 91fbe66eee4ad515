"""Data loading, one module per modality; each returns a DatasetDict ready for the Trainer and its collator."""
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
