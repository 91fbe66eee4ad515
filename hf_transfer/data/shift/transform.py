"""The record every target-condition transform fills, whatever its modality."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MODALITIES = ("image", "audio", "text")


@dataclass(frozen=True)
class Transform:
    """One named condition. `function(x, strength, rng, **context)` is pure: the same input, strength and generator
    state give the same output, of the same shape and type. `physical(strength)` says what a strength means in the
    condition's own units ("SNR 10 dB"), for the preview, the docs and the run's report."""

    name: str
    modality: str
    function: Callable
    physical: Callable[[float], str]
    summary: str  # one line: what the condition is

    def __call__(self, x, strength: float, rng, **context):
        if strength <= 0:  # strength 0 is the identity, whatever the transform would draw
            return x
        return self.function(x, float(strength), rng, **context)

    def __reduce__(self):
        # Pickled by name (a collator goes to DataLoader workers that way under the spawn start method): the registry
        # entry is found again in the receiving process, so its functions may be lambdas.
        return find, (self.modality, self.name)


def find(modality: str, name: str) -> Transform:
    """The transform `name` of `modality`, from its module's registry (hf_transfer/data/shift/<modality>.py)."""
    import importlib

    return importlib.import_module(f"hf_transfer.data.shift.{modality}").TRANSFORMS[name]


def registry(*transforms: Transform) -> dict[str, Transform]:
    return {t.name: t for t in transforms}
