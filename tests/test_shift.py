"""Synthetic target conditions (hf_transfer/data/shift, docs/shift.md): every transform deterministic under a seed, the
identity at strength 0, shapes and types kept; the physics checked independently (telephone band by FFT, noise at its
SNR, a room's decay time, light and noise levels); the spec and its one-line errors; row seeds per epoch; and through
the recipes: resumed training batches equal the uninterrupted run's, the clean validation untouched by --eval_shift,
the preview written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from audio_helpers import make_label_folders as make_clip_folders
from audio_helpers import save_speech_checkpoint, save_whisper_checkpoint, tone, write_clip
from conftest import cli_error, recipe_argv
from image_helpers import make_label_folders, save_tiny_vit
from trainer_helpers import BatchRecorder, assert_same_batches, assert_same_weights, keep_only_checkpoint

from hf_transfer.data.randomness import ROW, TrainingEpoch
from hf_transfer.data.shift.plan import EVAL_SHIFT, ShiftPlan
from hf_transfer.data.shift.spec import (
    TRANSFORMS,
    AudioShiftArgs,
    ImageShiftArgs,
    TextShiftArgs,
    parse_shift,
)
from hf_transfer.data.shift.text import KEYBOARD_NEIGHBOURS
from hf_transfer.errors import HfTransferError

RATE = 16000
SENTENCE = "The movie was great, and the acting (mostly) superb! I'd watch it again."


def sample_input(modality: str):
    if modality == "image":
        return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 24, 40), dtype=np.uint8))
    if modality == "audio":
        rng = np.random.default_rng(0)
        return (tone(440.0, RATE, 0.5, amplitude=0.3) + 0.05 * rng.standard_normal(RATE // 2)).astype(np.float32)
    return SENTENCE


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return a == b


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A folder of noise recordings and one of impulse responses, for the two transforms that read files."""
    root = tmp_path_factory.mktemp("shift_folders")
    rng = np.random.default_rng(5)
    import soundfile

    (root / "noise").mkdir()
    soundfile.write(root / "noise" / "hum.wav", (0.2 * rng.standard_normal(4000)).astype(np.float32), 8000)
    (root / "rooms").mkdir()
    impulse = np.zeros(800, np.float32)
    impulse[0], impulse[200], impulse[500] = 1.0, 0.5, 0.25
    soundfile.write(root / "rooms" / "room.wav", impulse, 8000)
    return {"noise_dir": str(root / "noise"), "impulse_dir": str(root / "rooms")}


def context(transform, folders) -> dict:
    return {"sampling_rate": RATE, **folders} if transform.modality == "audio" else {}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_is_seeded_keeps_shape_and_type_and_is_the_identity_at_strength_0(name, folders):
    transform = TRANSFORMS[name]
    x = sample_input(transform.modality)
    kwargs = context(transform, folders)
    first = transform(x, 0.8, np.random.default_rng(7), **kwargs)
    again = transform(x, 0.8, np.random.default_rng(7), **kwargs)
    assert same(first, again)  # a pure function of (input, strength, generator state)
    assert not same(first, x)  # strength 0.8 changes the input
    assert same(transform(x, 0.0, np.random.default_rng(7), **kwargs), x)
    assert type(first) is type(x)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        assert first.shape == x.shape and first.dtype == x.dtype
    assert transform.physical(0.8) and transform.summary


def test_random_transforms_draw_from_the_generator_they_are_given():
    for name in ("gaussian_noise", "shot_noise", "motion_blur", "fog", "colour_cast", "white_noise", "pink_noise",
                 "reverb", "typos", "casing", "word_dropout"):
        transform = TRANSFORMS[name]
        x = sample_input(transform.modality)
        kwargs = {"sampling_rate": RATE} if transform.modality == "audio" else {}
        a = transform(x, 1.0, np.random.default_rng(1), **kwargs)
        b = transform(x, 1.0, np.random.default_rng(2), **kwargs)
        assert not same(a, b), name


def test_a_pil_image_comes_back_a_pil_image_of_the_same_size_and_mode():
    from PIL import Image

    image = Image.fromarray(np.full((20, 30, 3), 120, np.uint8))
    out = parse_shift("low_light:0.5,gaussian_noise:0.5,jpeg:0.5,low_resolution:0.5,fog:0.5", "image")(
        image, np.random.default_rng(0))
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == "RGB"


# --- the physics, computed independently ---

def band_gain_db(x: np.ndarray, y: np.ndarray, frequency: int) -> float:
    window = np.hanning(len(x))
    spectrum_in, spectrum_out = np.abs(np.fft.rfft(x * window)), np.abs(np.fft.rfft(y * window))
    bin_ = round(frequency * len(x) / RATE)
    return 20 * np.log10(spectrum_out[bin_] / spectrum_in[bin_])


def test_the_telephone_band_keeps_300_to_3400_hz_and_removes_the_rest():
    t = np.arange(RATE) / RATE
    frequencies = [100, 150, 500, 1000, 2000, 3000, 5000, 6500]
    x = sum(0.05 * np.sin(2 * np.pi * f * t) for f in frequencies).astype(np.float32)
    y = TRANSFORMS["telephone"](x, 1.0, np.random.default_rng(0), sampling_rate=RATE)
    gains = {f: band_gain_db(x, y, f) for f in frequencies}
    for f in (500, 1000, 2000, 3000):
        assert abs(gains[f]) < 1.0, gains  # the voice band passes
    assert gains[100] < -40 and gains[150] < -30, gains  # below 300 Hz: gone
    assert gains[5000] < -40 and gains[6500] < -40, gains  # above 3.4 kHz: gone (8 kHz sampling cannot hold it)
    # White noise through the line: the energy outside the band is a sliver of the energy inside it.
    noise = (0.1 * np.random.default_rng(1).standard_normal(RATE)).astype(np.float32)
    out = TRANSFORMS["telephone"](noise, 1.0, np.random.default_rng(0), sampling_rate=RATE)
    power = np.abs(np.fft.rfft(out)) ** 2
    hz = np.fft.rfftfreq(len(out), 1 / RATE)
    inside = power[(hz >= 300) & (hz <= 3400)].sum()
    assert power[hz < 200].sum() < 0.002 * inside and power[hz > 4500].sum() < 0.001 * inside


@pytest.mark.parametrize("name", ["white_noise", "pink_noise", "noise_clips"])
@pytest.mark.parametrize("strength", [0.25, 0.75, 1.0])
def test_additive_noise_hits_the_asked_snr(name, strength, folders):
    x = sample_input("audio")
    y = TRANSFORMS[name](x, strength, np.random.default_rng(3), sampling_rate=RATE, **folders)
    noise = y.astype(np.float64) - x
    measured = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise ** 2))
    assert measured == pytest.approx(40 * (1 - strength), abs=0.01)


def test_pink_noise_falls_3_db_per_octave():
    from hf_transfer.data.shift.audio import pink

    power = np.abs(np.fft.rfft(pink(2 ** 18, np.random.default_rng(0)))) ** 2
    octave = lambda lo: power[lo:2 * lo].mean()  # noqa: E731
    assert 10 * np.log10(octave(1024) / octave(4096)) == pytest.approx(6.0, abs=0.5)  # two octaves: 6 dB


def test_the_synthetic_room_decays_60_db_in_its_rt60():
    from hf_transfer.data.shift.audio import room_impulse

    for strength, rt60 in ((0.5, 0.55), (1.0, 1.0)):
        impulse = room_impulse(strength, RATE, np.random.default_rng(0)).astype(np.float64)
        tail = impulse[1:] ** 2  # without the direct sound
        decay = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())  # Schroeder's backward integral
        t = np.arange(len(tail)) / RATE
        fit = (decay > -25) & (decay < -5)  # T20, extrapolated to 60 dB as ISO 3382 does
        slope = np.polyfit(t[fit], decay[fit], 1)[0]
        assert -60 / slope == pytest.approx(rt60, rel=0.1)


def test_light_and_noise_levels_follow_their_documented_values():
    grey = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    dark = TRANSFORMS["low_light"](grey, 0.6, np.random.default_rng(0))
    brightness, gamma = 1 - 0.85 * 0.6, 1 + 1.5 * 0.6  # docs/shift.md
    assert int(dark[0, 0, 0]) == pytest.approx(255 * (128 / 255) ** gamma * brightness, abs=1)
    noisy = TRANSFORMS["gaussian_noise"](grey, 0.5, np.random.default_rng(0)).float()
    assert float(noisy.std()) == pytest.approx(0.2 * 0.5 * 255, rel=0.03)  # 12,288 values: 1.3% standard error
    halves = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    halves[:, 2:] = 200  # mean grey 150: contrast x0.2 pulls each value 80% of the way there
    flat = TRANSFORMS["contrast"](halves, 1.0, None)
    assert abs(int(flat[0, 0, 0]) - (0.2 * 100 + 0.8 * 150)) <= 1 and abs(int(flat[0, 3, 0]) - (0.2 * 200 + 0.8 * 150)) <= 1


def test_the_separable_blur_is_torchvisions_gaussian_blur():
    from torchvision.transforms.v2 import functional as F

    image = sample_input("image")
    sigma = 0.04 * 0.8 * 24  # docs/shift.md: 4% of the shorter side at strength 1
    size = 2 * int(np.ceil(3 * sigma)) + 1
    reference = F.gaussian_blur(image, [size, size], [sigma, sigma])
    assert (TRANSFORMS["gaussian_blur"](image, 0.8, None).int() - reference.int()).abs().max() <= 1


def test_typos_use_keyboard_neighbours_and_keep_non_letters():
    assert KEYBOARD_NEIGHBOURS["f"] == "cdgrtv" and KEYBOARD_NEIGHBOURS["q"] == "aw"
    out = TRANSFORMS["keyboard"]("ffff ffff 1234, !", 1.0, np.random.default_rng(0))
    assert out[4:] == " " + out[5:9] + " 1234, !" and all(c in "cdgrtv f" for c in out[:9])
    assert TRANSFORMS["word_dropout"]("word", 1.0, np.random.default_rng(0)) == "word"  # never empty


# --- the spec ---

def test_the_spec_reads_defaults_probability_and_composes_in_order():
    shift = parse_shift("low_light,gaussian_noise:0.3@0.5", "image")
    assert [(s.transform.name, s.strength, s.probability) for s in shift.steps] == [("low_light", 0.5, 1.0),
                                                                                    ("gaussian_noise", 0.3, 0.5)]
    assert str(shift) == "low_light:0.5,gaussian_noise:0.3@0.5"
    assert "gamma 1.75" in shift.describe() and "on 50% of rows" in shift.describe()
    x = sample_input("image")
    never = parse_shift("gaussian_noise:1@0", "image")
    assert same(never(x, np.random.default_rng(0)), x)
    # Composition is the steps in order, each with its own draw of the same generator after the probability's.
    rng, manual = np.random.default_rng(4), x
    for name in ("jpeg", "gaussian_noise"):
        rng.random()
        manual = TRANSFORMS[name](manual, 0.7, rng)
    assert same(parse_shift("jpeg:0.7,gaussian_noise:0.7", "image")(x, np.random.default_rng(4)), manual)


def test_a_step_applies_to_its_share_of_rows():
    shift = parse_shift("typos:1@0.3", "text")
    hit = sum(shift("abcdefghij klmnopqrst", np.random.default_rng([9, i])) != "abcdefghij klmnopqrst" for i in range(2000))
    assert abs(hit - 600) < 4 * np.sqrt(2000 * 0.3 * 0.7)  # binomial(2000, 0.3): 4 standard deviations


@pytest.mark.parametrize("spec, message", [
    ("lowlight:0.5", r"unknown transform 'lowlight'; did you mean low_light\? the image transforms are low_light, "),
    ("telephone", r"telephone is an audio transform and this recipe's data are image; use one of low_light"),
    ("low_light:1.5", r"low_light's strength must be a number in \[0, 1\], got '1.5'"),
    ("low_light:0.5@2", r"low_light's probability must be a number in \[0, 1\], got '2'"),
    ("low_light=0.5", r"cannot read 'low_light=0.5' .* write name\[:strength\]\[@probability\] steps"),
    ("low_light:,", r"low_light's strength must be a number"),
])
def test_bad_specs_are_one_line_errors_naming_the_fix(spec, message):
    with pytest.raises(HfTransferError, match=message):
        ImageShiftArgs(synthetic_shift=spec)


def test_eval_shifts_are_named_when_several_and_the_options_take_yaml_lists():
    args = ImageShiftArgs(synthetic_shift=["low_light:0.6", "jpeg:0.2"], eval_shift=["night=low_light:0.8", "blur=gaussian_blur"])
    assert str(args.synthetic) == "low_light:0.6,jpeg:0.2"
    assert [s.label for s in args.evaluations] == ["shifted_night", "shifted_blur"]
    assert [s.label for s in TextShiftArgs(eval_shift=["typos:0.4"]).evaluations] == ["shifted"]
    with pytest.raises(HfTransferError, match="several shifts need a name each"):
        ImageShiftArgs(eval_shift=["low_light", "jpeg"])
    with pytest.raises(HfTransferError, match="noise_clips needs --shift_noise_dir"):
        AudioShiftArgs(synthetic_shift="noise_clips:0.5")


# --- rows, epochs and workers ---

def test_training_rows_draw_per_epoch_and_evaluation_rows_are_fixed():
    epoch = TrainingEpoch()
    plan = ShiftPlan(TextShiftArgs(synthetic_shift="typos:1", eval_shift=["casing:1"]), seed=3, epoch=epoch)
    train_row, eval_row, clean_row = {"augment": True, ROW: 5}, {ROW: 5, EVAL_SHIFT: 0}, {"text": "x"}
    text = "the quick brown fox jumps over the lazy dog"
    first = plan.apply(train_row, text)
    assert first == parse_shift("typos:1", "text")(text, np.random.default_rng([3, 0, 5]))  # (seed, epoch, row)
    epoch.set(1)  # what the TrainingEpoch callback does as an epoch begins
    assert plan.apply(train_row, text) != first  # a new draw each epoch
    epoch.set(0)
    assert plan.apply(train_row, text) == first  # ... and the same again for the same epoch (a resumed run)
    assert plan.apply(eval_row, text) == parse_shift("casing:1", "text")(text, np.random.default_rng([0, 5]))
    assert plan.apply(clean_row, text) == text
    with pytest.raises(ValueError, match="a training row has no 'row_number'"):
        plan.apply({"augment": True}, text)


def test_synthetic_shift_probability_leaves_its_share_of_training_rows_clean():
    plan = ShiftPlan(TextShiftArgs(synthetic_shift="word_dropout:1", synthetic_shift_probability=0.25), seed=0)
    text = "one two three four five six seven eight nine ten eleven twelve"
    shifted = 0
    for row in range(2000):
        out = plan.apply({"augment": True, ROW: row}, text)
        rng = np.random.default_rng([0, 0, row])  # the row's generator: its first draw decides, the shift goes on from it
        expected = parse_shift("word_dropout:1", "text")(text, rng) if rng.random() < 0.25 else text
        assert out == expected
        shifted += out != text
    assert abs(shifted - 500) < 4 * np.sqrt(2000 * 0.25 * 0.75)
    assert ShiftPlan(TextShiftArgs(synthetic_shift="typos", synthetic_shift_probability=0.25)).report[
        "synthetic_shift_probability"] == 0.25
    with pytest.raises(HfTransferError, match=r"--synthetic_shift_probability must be in \[0, 1\], got 1.5"):
        TextShiftArgs(synthetic_shift="typos", synthetic_shift_probability=1.5)


def test_a_plan_pickles_for_spawned_workers_and_shifts_alike():
    import pickle

    plan = ShiftPlan(AudioShiftArgs(synthetic_shift="reverb:0.5,white_noise", eval_shift=["telephone"]), seed=4)
    plan.epoch.set(2)
    copy = pickle.loads(pickle.dumps(plan))
    clip, row = sample_input("audio"), {"augment": True, ROW: 1}
    assert copy.epoch.value == 2 and copy.synthetic.steps[0].transform is TRANSFORMS["reverb"]
    assert np.array_equal(copy.apply(row, clip, sampling_rate=RATE), plan.apply(row, clip, sampling_rate=RATE))


class EpochProbe:
    """A collate function that returns the epoch its copy of the plan sees (in a DataLoader worker process)."""

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, rows):
        return torch.tensor([self.plan.epoch.value] * len(rows))


def test_persistent_dataloader_workers_see_each_new_epoch():
    plan = ShiftPlan(TextShiftArgs(synthetic_shift="typos:1"), seed=0)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=4, num_workers=2, persistent_workers=True,
                                         collate_fn=EpochProbe(plan))
    seen = []
    for epoch in range(3):
        plan.epoch.set(epoch)  # what the TrainingEpoch callback does as each epoch begins
        seen.append(sorted({int(v) for batch in loader for v in batch}))
    assert seen == [[0], [1], [2]]


# --- through the recipes ---

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift_images")
    make_label_folders(root / "train", per_label=8, seed=0)
    make_label_folders(root / "validation", per_label=3, seed=1)
    save_tiny_vit(root / "vit")
    return root


def image_argv(root, out, *extra):
    return ["--model_name_or_path", str(root / "vit"), "--train_dir", str(root / "train"), "--validation_dir",
            str(root / "validation"), "--output_dir", str(out), "--num_train_epochs", "2", "--per_device_train_batch_size",
            "4", "--learning_rate", "3e-3", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no",
            "--disable_tqdm", "true", "--seed", "0", *extra]


def test_a_resumed_image_run_trains_on_the_uninterrupted_runs_batches(images, tmp_path, monkeypatch):
    from recipes import image_classification

    # The shift together with the recipe's crops and flips (on by default): both draw per row, so both resume exactly.
    flags = ["--synthetic_shift", "low_light:0.6,gaussian_noise:0.5@0.5,motion_blur:0.8", "--save_strategy", "steps",
             "--save_steps", "2"]
    recorder = BatchRecorder(monkeypatch)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    image_classification.main(image_argv(images, whole, *flags))
    uninterrupted = recorder.take()  # 16 images, batches of 4, 2 epochs: 8 steps
    image_classification.main(image_argv(images, cut, *flags))
    recorder.take()
    keep_only_checkpoint(cut, "checkpoint-6")  # in the middle of the second epoch
    resumed = image_classification.main(image_argv(images, cut, *flags, "--resume_from_checkpoint", "last"))
    assert resumed["resumed_from_step"] == 6
    assert_same_batches(uninterrupted[6:], recorder.take())
    assert_same_weights(whole / "model.safetensors", cut / "model.safetensors")
    # The shift drew anew in the second epoch: no batch of epoch 2 repeats a batch of epoch 1.
    first, second = [b["pixel_values"] for b in uninterrupted[:4]], [b["pixel_values"] for b in uninterrupted[4:]]
    assert not any(torch.equal(a, b) for a in first for b in second)


def test_eval_shift_leaves_the_clean_validation_exactly_as_without_it(images, tmp_path, capsys):
    from safetensors.torch import load_file

    from recipes import image_classification

    plain = image_classification.main(image_argv(images, tmp_path / "plain"))
    shifted = image_classification.main(image_argv(images, tmp_path / "shifted", "--eval_shift",
                                                   "night=low_light:1,gaussian_noise:1", "blur=gaussian_blur:1"))
    clean = {k: v for k, v in plain.items() if k.startswith("validation_") and not k.endswith(("_runtime", "_per_second"))}
    assert clean and clean == {k: shifted[k] for k in clean}
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "shifted" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for label in ("night", "blur"):
        assert shifted[f"shifted_{label}_validation_loss"] != shifted["validation_loss"]
    assert shifted["shifted_night_eval_shift"] == "low_light:1,gaussian_noise:1" and shifted["eval_shift_seed"] == 0
    printed = capsys.readouterr().out
    accuracy = shifted["shifted_night_validation_accuracy"]
    assert (f"validation_accuracy (shifted_night)  {accuracy:.4f} (clean {shifted['validation_accuracy']:.4f}, "
            f"{accuracy - shifted['validation_accuracy']:+.4f})") in printed
    preview = tmp_path / "shifted" / "shift_preview.png"
    assert preview.is_file() and not (tmp_path / "plain" / "shift_preview.png").exists()
    from PIL import Image

    assert Image.open(preview).size[0] > 3 * Image.open(preview).size[1] / 6  # one column per version, six rows


def test_a_resumed_text_run_with_a_shift_equals_the_uninterrupted_one(tiny_text_model_dir, review_files, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from recipes import sentiment

    flags = ["--synthetic_shift", "typos:1,casing:0.5@0.5", "--eval_shift", "word_dropout:0.8", "--num_train_epochs", "2",
             "--save_strategy", "steps", "--save_steps", "4"]
    recorder = BatchRecorder(monkeypatch)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, whole, *flags))
    uninterrupted = recorder.take()  # 64 reviews, batches of 8, 2 epochs: 16 steps
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, cut, *flags))
    recorder.take()
    keep_only_checkpoint(cut, "checkpoint-12")
    resumed = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, cut, *flags, "--resume_from_checkpoint", "last"))
    assert resumed["resumed_from_step"] == 12
    assert_same_batches(uninterrupted[12:], recorder.take())
    expected, got = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed["shifted_validation_accuracy"] == metrics["shifted_validation_accuracy"]
    # The preview: each sentence and what the shifts make of it, with the generators the preview documents.
    preview = (whole / "shift_preview.txt").read_text()
    first = preview.split("[0] original: ", 1)[1].splitlines()
    typed = parse_shift("typos:1,casing:0.5", "text")(first[0], np.random.default_rng([42, 0, 0]))
    assert first[1] == f"    --synthetic_shift (training): {typed}" and typed != first[0]
    assert first[2].startswith("    --eval_shift (shifted): ")


def test_text_rows_are_tokenised_after_their_shift(tiny_text_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from hf_transfer.data.shift.plan import TextShiftCollator
    from hf_transfer.data.text import TextDataArgs, text_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    plan = ShiftPlan(TextShiftArgs(synthetic_shift="word_dropout:1"), seed=1)
    collator = TextShiftCollator(text_collator(TextDataArgs(), tokenizer, False), tokenizer, plan, ["text"], 16)
    text = "the movie was great and the phone was bad"
    clean = {**tokenizer(text), "labels": 1, "text": text}
    batch = collator([{**clean, "augment": True, ROW: 0}, clean])
    dropped = parse_shift("word_dropout:1", "text")(text, np.random.default_rng([1, 0, 0]))
    assert batch["input_ids"][0].tolist()[: len(tokenizer(dropped)["input_ids"])] == tokenizer(dropped)["input_ids"]
    assert batch["input_ids"][1].tolist() == tokenizer(text)["input_ids"] and batch["labels"].tolist() == [1, 1]
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift_audio")
    make_clip_folders(root / "train", per_label=4, seed=0)
    make_clip_folders(root / "dev", per_label=2, seed=1)
    return root


def test_the_audio_collator_shifts_training_and_evaluation_rows_and_leaves_clean_ones(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    from hf_transfer.data.audio import AudioCollator
    from hf_transfer.data.audio_io import read_audio

    path = write_clip(tmp_path / "a.wav", 440.0, 8000, 0.5)
    plan = ShiftPlan(AudioShiftArgs(synthetic_shift="telephone:1", eval_shift=["white_noise:0.75"]), seed=2)
    collator = AudioCollator(Wav2Vec2FeatureExtractor(sampling_rate=RATE), shift=plan)
    clip = read_audio(str(path), RATE)
    training = collator.waveform({"audio": str(path), "augment": True, ROW: 3})
    evaluation = collator.waveform({"audio": str(path), ROW: 3, EVAL_SHIFT: 0})
    telephone, noise = parse_shift("telephone:1", "audio"), parse_shift("white_noise:0.75", "audio")
    assert np.array_equal(training, telephone(clip, np.random.default_rng([2, 0, 3]), sampling_rate=RATE))  # seed, epoch, row
    assert np.array_equal(evaluation, noise(clip, np.random.default_rng([0, 3]), sampling_rate=RATE))  # eval seed, row
    assert np.array_equal(collator.waveform({"audio": str(path)}), clip)
    assert collator.inputs_vary_per_epoch == "--synthetic_shift transforms training clips anew every epoch"


@pytest.mark.parametrize("model", ["wav2vec2", "whisper"])
def test_audio_recipes_train_with_the_shift_and_report_clean_beside_shifted(clips, tmp_path, model):
    from recipes import audio_classification

    checkpoint = (save_speech_checkpoint(tmp_path / "w2v") if model == "wav2vec2"
                  else save_whisper_checkpoint(tmp_path / "whisper"))
    out = tmp_path / "out"
    metrics = audio_classification.main([
        "--model_name_or_path", str(checkpoint), "--train_dir", str(clips / "train"), "--validation_dir", str(clips / "dev"),
        "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--save_strategy", "no",
        "--disable_tqdm", "true", "--synthetic_shift", "telephone:1,white_noise:0.75", "--eval_shift", "reverb:0.8",
        *(["--whisper_window_seconds", "1"] if model == "whisper" else [])])
    assert metrics["synthetic_shift"] == "telephone:1,white_noise:0.75"
    assert metrics["shifted_validation_loss"] != metrics["validation_loss"]
    assert (out / "shift_preview.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["shifted_eval_shift_means"].startswith("reverb:0.8 (RT60 0.82 s")


def test_bad_shift_input_is_one_line_exit_2_and_writes_nothing(tiny_text_model_dir, review_files, clips, tmp_path,
                                                               monkeypatch, capsys):
    from recipes import audio_classification, sentiment

    out = tmp_path / "out"
    text = lambda *flags: recipe_argv(tiny_text_model_dir, review_files, out, *flags)  # noqa: E731
    assert "unknown transform 'tpyos'; did you mean typos?" in cli_error(sentiment.main, text("--synthetic_shift", "tpyos:0.5"),
                                                                         monkeypatch, capsys, alone=True)
    assert "low_light is an image transform and this recipe's data are text" in cli_error(
        sentiment.main, text("--eval_shift", "low_light"), monkeypatch, capsys, alone=True)
    assert "typos's strength must be a number in [0, 1], got '3'" in cli_error(
        sentiment.main, text("--synthetic_shift", "typos:3"), monkeypatch, capsys, alone=True)
    assert "but --synthetic_shift transforms training texts anew every epoch; drop --cache_frozen_prefix" in cli_error(
        sentiment.main, text("--synthetic_shift", "typos", "--strategy", "freeze", "--freeze_bottom", "1",
                             "--cache_frozen_prefix", "true"), monkeypatch, capsys)
    checkpoint = save_speech_checkpoint(tmp_path / "w2v")
    capsys.readouterr()
    audio = ["--model_name_or_path", str(checkpoint), "--train_dir", str(clips / "train"), "--output_dir", str(out)]
    assert "reverb_files needs --shift_impulse_dir" in cli_error(
        audio_classification.main, audio + ["--synthetic_shift", "reverb_files"], monkeypatch, capsys, alone=True)
    assert not out.exists()
