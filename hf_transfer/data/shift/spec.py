"""The transforms by name, the spec that composes them, and the recipes' options (`--synthetic_shift`, `--eval_shift`).

A spec is a comma-separated list of steps, applied left to right, each `name[:strength][@probability]`:

    low_light:0.6,gaussian_noise:0.3@0.5     darken every image (strength 0.6), add noise to half of them
    telephone,white_noise:0.75               the full telephone chain at the default strength, then 10 dB SNR noise

`strength` is in [0, 1] (default 0.5): 0 is the identity and 1 the strongest the transform goes; each transform maps
it onto its own physical range (SNR in dB, blur radius, JPEG quality: docs/shift.md, or `describe`). `probability`
(default 1) is the chance a row gets that step. Names belong to one modality; a recipe takes its own modality's.
Everything is checked when the options are parsed: a bad spec is one line naming it and the fix.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from hf_transfer.data.shift import audio, image, text
from hf_transfer.data.shift.transform import MODALITIES, Transform
from hf_transfer.errors import HfTransferError

TRANSFORMS: dict[str, Transform] = {**image.TRANSFORMS, **audio.TRANSFORMS, **text.TRANSFORMS}
DEFAULT_STRENGTH = 0.5
_STEP = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?::(?P<strength>[^@:]*))?(?:@(?P<probability>[^@:]*))?$")
_NAMED = re.compile(r"^(?P<label>[a-z][a-z0-9_]*)=(?P<spec>.*)$")


def names(modality: str) -> list[str]:
    return [name for name, t in TRANSFORMS.items() if t.modality == modality]


@dataclass(frozen=True)
class Step:
    transform: Transform
    strength: float = DEFAULT_STRENGTH
    probability: float = 1.0

    def __str__(self) -> str:
        return f"{self.transform.name}:{self.strength:g}" + (f"@{self.probability:g}" if self.probability != 1 else "")

    def describe(self) -> str:
        chance = f", on {self.probability:.0%} of rows" if self.probability != 1 else ""
        return f"{self} ({self.transform.physical(self.strength)}{chance})"


@dataclass(frozen=True)
class Shift:
    """A parsed spec: its steps, applied in order, each on a row with its probability. `label` names the shifted
    validation copy it makes (`shifted` for one unnamed evaluation shift)."""

    steps: tuple[Step, ...]
    modality: str
    label: str = "shifted"

    def __call__(self, x, rng: np.random.Generator, **context):
        """`x` shifted: an image (PIL or uint8 tensor), a waveform (with `sampling_rate=` in `context`) or a text."""
        restore = None
        if self.modality == "image":
            x, restore = image.to_tensor(x)
        for step in self.steps:
            # Always drawn, so a step's probability never changes what the steps after it draw.
            if rng.random() < step.probability:
                x = step.transform(x, step.strength, rng, **context)
        return restore(x) if restore else x

    def __str__(self) -> str:
        return ",".join(str(step) for step in self.steps)

    def describe(self) -> str:
        return "; ".join(step.describe() for step in self.steps)


def _number(value: str | None, what: str, name: str, option: str, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise HfTransferError(f"{option}: {name}'s {what} must be a number in [0, 1], got '{value}' "
                              f"(e.g. {name}:0.5@0.5 for strength 0.5 on half the rows)")
    return number


def parse_shift(spec: str, modality: str, option: str = "--synthetic_shift", label: str = "shifted") -> Shift:
    """`spec` as a `Shift` of `modality`'s transforms, or a one-line HfTransferError naming the step and the fix."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}")
    own = names(modality)
    steps = []
    for part in [p.strip() for p in str(spec).split(",")]:
        match = _STEP.match(part)
        if not part or match is None:
            raise HfTransferError(f"{option}: cannot read '{part}' in '{spec}'; write name[:strength][@probability] steps "
                                  f"separated by commas, e.g. {own[0]}:0.6,{own[1]}:0.3@0.5")
        name = match["name"].lower()
        transform = TRANSFORMS.get(name)
        if transform is None:
            close = difflib.get_close_matches(name, own, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise HfTransferError(f"{option}: unknown transform '{name}'; {hint}the {modality} transforms are {', '.join(own)}")
        if transform.modality != modality:
            raise HfTransferError(f"{option}: {name} is an {transform.modality} transform and this recipe's data are "
                                  f"{modality}; use one of {', '.join(own)}")
        strength = _number(match["strength"], "strength", name, option, DEFAULT_STRENGTH)
        probability = _number(match["probability"], "probability", name, option, 1.0)
        steps.append(Step(transform, strength, probability))
    return Shift(tuple(steps), modality, label)


def parse_eval_shifts(specs: list[str], modality: str) -> list[Shift]:
    """`--eval_shift` values: one spec (the copy `shifted`), or several, each `label=spec` (the copies `shifted_<label>`)."""
    shifts = []
    for spec in specs:
        named = _NAMED.match(spec.strip())
        if named is None and len(specs) > 1:
            raise HfTransferError(f"--eval_shift: several shifts need a name each, label=spec (e.g. night=low_light:0.7 "
                                  f"blur=gaussian_blur:0.5); '{spec}' has none")
        label = f"shifted_{named['label']}" if named else "shifted"
        shifts.append(parse_shift(named["spec"] if named else spec, modality, "--eval_shift", label))
    labels = [s.label for s in shifts]
    if len(set(labels)) < len(labels):
        raise HfTransferError(f"--eval_shift: each shift needs its own name; got {', '.join(labels)}")
    return shifts


def _as_spec(value) -> str | None:
    """A spec from the command line (a string) or a config file (a string, or a YAML list of steps)."""
    if value is None or value == "":
        return None
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


@dataclass
class ShiftArgs:
    """Synthetic target conditions, for the recipe's own modality (a subclass per modality sets it)."""

    modality: ClassVar[str] = ""

    synthetic_shift: str | None = field(
        default=None,
        metadata={"help": "Transform training rows toward the target's condition, on the fly: name[:strength][@probability] "
                  "steps, comma-separated, e.g. 'low_light:0.6,gaussian_noise:0.3@0.5' (strength in [0, 1], default 0.5; "
                  "probability default 1). Names and ranges: docs/shift.md."},
    )
    synthetic_shift_probability: float = field(
        default=1.0,
        metadata={"help": "The share of training rows that get --synthetic_shift at all (each step then has its own "
                  "@probability): 0.5 trains on clean and shifted rows alike, which keeps the clean accuracy."},
    )
    eval_shift: list[str] | None = field(
        default=None,
        metadata={"help": "Also evaluate a shifted copy of the validation set (metrics shifted_validation_*), the clean "
                  "one untouched: a spec like --synthetic_shift's, or several as label=spec (shifted_<label>_validation_*)."},
    )
    eval_shift_seed: int = field(
        default=0,
        metadata={"help": "Seed of the shifted validation copies (row i draws from numpy's default_rng([seed, i])): the "
                  "same copy in every run, whatever --seed."},
    )

    def __post_init__(self) -> None:
        self.synthetic_shift = _as_spec(self.synthetic_shift)
        if isinstance(self.eval_shift, str):
            self.eval_shift = [self.eval_shift]
        self.eval_shift = list(self.eval_shift) if self.eval_shift else None
        if not 0.0 <= self.synthetic_shift_probability <= 1.0:
            raise HfTransferError(f"--synthetic_shift_probability must be in [0, 1], got {self.synthetic_shift_probability}")
        # Parsed now, so that a bad spec fails with the other options, before anything loads.
        self.synthetic = parse_shift(self.synthetic_shift, self.modality) if self.synthetic_shift else None
        self.evaluations = parse_eval_shifts(self.eval_shift, self.modality) if self.eval_shift else []

    @property
    def active(self) -> bool:
        return self.synthetic is not None or bool(self.evaluations)

    def context(self) -> dict:
        """Keyword arguments every transform of the modality gets besides the row (folders, for audio)."""
        return {}


@dataclass
class ImageShiftArgs(ShiftArgs):
    modality: ClassVar[str] = "image"


@dataclass
class TextShiftArgs(ShiftArgs):
    modality: ClassVar[str] = "text"


@dataclass
class AudioShiftArgs(ShiftArgs):
    modality: ClassVar[str] = "audio"

    shift_noise_dir: str | None = field(
        default=None, metadata={"help": "Folder of noise recordings for the noise_clips transform (any depth; WAV, FLAC, OGG)."}
    )
    shift_impulse_dir: str | None = field(
        default=None, metadata={"help": "Folder of room impulse responses for the reverb_files transform."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        used = {step.transform.name for shift in [self.synthetic, *self.evaluations] if shift for step in shift.steps}
        for transform, option in (("noise_clips", "shift_noise_dir"), ("reverb_files", "shift_impulse_dir")):
            folder = getattr(self, option)
            if transform in used and not folder:
                raise HfTransferError(f"{transform} needs --{option}, a folder of audio files")
            if folder and not Path(folder).is_dir():
                raise HfTransferError(f"--{option} {folder} is not a folder; give the folder holding the audio files")
            if folder and not audio.audio_files(folder):
                raise HfTransferError(f"--{option} {folder} holds no audio file (.wav, .flac, .ogg, ...); give a folder of clips")

    def context(self) -> dict:
        return {"noise_dir": self.shift_noise_dir, "impulse_dir": self.shift_impulse_dir}
