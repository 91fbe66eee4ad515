"""Data loading, one module per modality on a shared layer (io: sources and columns, labels, splits); each returns a DatasetDict ready for the Trainer and its collator."""
from pathlib import Path

from .labels import LabelMaps  # re-exported: `hf_transfer.data.LabelMaps` predates labels.py

SAMPLES = Path(__file__).parent / "samples"

__all__ = ["SAMPLES", "LabelMaps"]
