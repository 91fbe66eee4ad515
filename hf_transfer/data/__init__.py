"""Data loading, one module per modality; each returns a DatasetDict ready for the Trainer and its collator."""
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"


class LabelMaps:
    """id2label/label2id from a `label_names` list, for the labelled data classes of every modality."""

    label_names: list[str]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}
