"""CTC pieces against hand-worked cases: normalisation, vocabulary, decoding, edit distance, WER/CER, data checks; the
transcript rules both speech recognition recipes (CTC and Whisper) share."""
import importlib
import logging

import numpy as np
import pytest
from audio_helpers import (
    save_speech_checkpoint,
    save_whisper_recognition_files,
    tiny_speech_config,
    write_clip,
    write_table,
)
from transformers import EvalPrediction

from hf_transfer import HfTransferError
from hf_transfer.data.audio import AudioDataArgs
from hf_transfer.data.transcripts import (
    TranscriptArgs,
    build_vocabulary,
    ctc_frames_needed,
    load_speech_recognition,
    make_tokenizer,
    normalize_transcript,
    out_of_vocabulary,
)
from hf_transfer.metrics.speech import (
    character_error_rate,
    ctc_metrics,
    edit_distance,
    ids_to_text,
    word_error_rate,
)
from hf_transfer.tasks.speech_recognition import check_ctc_head


@pytest.mark.parametrize("options, expected", [
    ({}, "hello world it's fine é"),
    ({"text_case": "upper"}, "HELLO WORLD IT'S FINE É"),
    ({"text_case": "keep", "strip_punctuation": False}, "Hello, World! It's FINE. é"),
    ({"keep_punctuation": ""}, "hello world its fine é"),
])
def test_normalisation_options(options, expected):
    assert normalize_transcript("  Hello, World!  It's\tFINE. e\u0301", TranscriptArgs(**options)) == expected


def test_vocabulary_from_transcripts_and_its_tokenizer_round_trip():
    vocabulary = build_vocabulary(["ab ba", "cab", "aab"])
    assert vocabulary == {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5}
    tokenizer = make_tokenizer(vocabulary)
    assert len(tokenizer) == 6 and tokenizer.pad_token_id == 0  # no bos/eos appended beyond the CTC outputs
    assert tokenizer("ab ba")["input_ids"] == [3, 4, 2, 4, 3]
    table = {i: t for t, i in vocabulary.items()}
    # Labels keep double letters (no CTC collapsing); the tokenizer's own decode() would give "ab".
    assert ids_to_text(tokenizer("aab")["input_ids"], table, blank_id=0, collapse=False) == "aab"
    assert tokenizer("abx")["input_ids"] == [3, 4, 1]


def test_greedy_decoding_collapses_repeats_then_drops_blanks():
    table = {0: "<pad>", 1: "<unk>", 2: "|", 3: "a", 4: "b", 5: "c"}
    frames = [3, 3, 0, 3, 4, 4, 2, 2, 0, 5, 1, -100, -100]  # a a _ a b b | | _ c <unk> then padding
    assert ids_to_text(frames, table, blank_id=0) == "aab c\ufffd"
    assert ids_to_text([0, 0, 2, 3, 2, 0], table, blank_id=0) == "a"  # delimiters at the edges vanish


def test_edit_distance_and_error_rates_against_hand_counts():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1 and edit_distance("abc", "abc") == 0
    references = ["the cat sat", "hello world"]
    hypotheses = ["the cat sit down", "hello"]
    # words: sat->sit and +down (2), -world (1): 3 edits over 5 reference words
    assert word_error_rate(references, hypotheses) == pytest.approx(3 / 5)
    # characters: a->i and +" down" (1 + 5), -" world" (6): 12 edits over 11 + 11 reference characters
    assert character_error_rate(references, hypotheses) == pytest.approx(12 / 22)
    assert word_error_rate(["a b"], ["a b"]) == 0.0


def test_compute_metrics_decodes_predictions_and_labels():
    tokenizer = make_tokenizer(build_vocabulary(["the cat sat", "hello"]))
    ids = {c: tokenizer.convert_tokens_to_ids(c) for c in "thecaslo"}
    blank, space = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("|")

    def frames(text):  # a blank between letters, so double letters survive collapsing
        return [x for c in text for x in ((space if c == " " else ids[c]), blank)]

    def labels(text):
        return [space if c == " " else ids[c] for c in text]

    predicted = [frames("the cat st"), frames("helo")]
    targets = [labels("the cat sat"), labels("hello")]
    width = max(map(len, predicted + targets))
    pad = lambda rows: np.array([r + [-100] * (width - len(r)) for r in rows])
    scores = ctc_metrics(tokenizer)(EvalPrediction(predictions=pad(predicted), label_ids=pad(targets)))
    assert scores["wer"] == pytest.approx(2 / 4)  # "st" for "sat", "helo" for "hello"
    assert scores["cer"] == pytest.approx(2 / 16)  # one deleted 'a', one deleted 'l'


def test_out_of_vocabulary_characters_are_counted():
    tokenizer = make_tokenizer(build_vocabulary(["ab"]))
    assert out_of_vocabulary(["abc", "cc d"], tokenizer) == {"c": 3, "d": 1}


def test_frames_a_transcript_needs():
    assert ctc_frames_needed([5, 5, 6]) == 4 and ctc_frames_needed([5, 6, 5]) == 3 and ctc_frames_needed([]) == 0


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    clips = [write_clip(root / "clips" / f"{i}.wav", 300.0 + 50 * i, 16000, 0.3) for i in range(6)]
    tiny = write_clip(root / "clips" / "tiny.wav", 300.0, 16000, 0.004)  # 64 samples: 2 frames of the tiny model
    train = write_table(root / "train.csv", [{"path": f"clips/{c.name}", "text": t} for c, t in
                                              zip(clips + [tiny], ["Yes!", "no", "yes no", "No.", "yes", "no yes", "yes yes"])])
    validation = write_table(root / "dev.csv", [{"path": f"clips/{clips[0].name}", "text": "Señor yes"},
                                                {"path": f"clips/{clips[1].name}", "text": "no"}])
    return {"train": str(train), "validation": str(validation), "root": root}


def _load(files, text_args=TranscriptArgs(), **data):
    args = AudioDataArgs(train_file=files["train"], validation_file=files["validation"], long_audio="skip", **data)
    return load_speech_recognition(args, text_args, tiny_speech_config(), 16000, min_samples=20)


def test_vocabulary_comes_from_training_transcripts_and_evaluation_oov_is_a_warning(transcribed, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_transfer.ctc"):
        data = _load(transcribed)
    assert data.tokenizer.get_vocab() == {"<pad>": 0, "<unk>": 1, "|": 2, "e": 3, "n": 4, "o": 5, "s": 6, "y": 7}
    assert list(data.datasets["validation"]["text"]) == ["señor yes", "no"]
    assert data.report["validation_oov_characters"] == 2 and data.report["validation_oov_character_set"] == "rñ"
    assert "the validation split's transcripts have 2 characters outside the vocabulary" in caplog.text
    assert "'r' (1)" in caplog.text and "'ñ' (1)" in caplog.text
    # the 64-sample clip makes 2 frames, too few for "yes yes" (7 labels): skipped from training, counted
    assert data.report["train_too_short_for_transcript_skipped"] == 1 and len(data.datasets["train"]) == 6


def test_a_fixed_vocabulary_rejects_training_transcripts_outside_it(transcribed, tmp_path):
    model = save_speech_checkpoint(tmp_path / "ctc", ctc_vocabulary={"<pad>": 0, "<unk>": 1, "|": 2, "Y": 3, "E": 4, "S": 5, "N": 6, "O": 7})
    with pytest.raises(HfTransferError, match=r"train split's transcripts have 26 characters outside the vocabulary of .*ctc: "
                                              r"'y' \(6\), 'e' \(6\), 's' \(6\), 'n' \(4\), 'o' \(4\); .* in upper case: pass --text_case upper"):
        _load(transcribed, TranscriptArgs(tokenizer_name_or_path=str(model)))
    data = _load(transcribed, TranscriptArgs(tokenizer_name_or_path=str(model), text_case="upper"))
    assert data.tokenizer("YES")["input_ids"] == [3, 4, 5]


def test_missing_transcripts_a_wrong_column_and_cutting_are_errors(transcribed):
    untranscribed = write_table(transcribed["root"] / "untranscribed.csv", [{"path": "clips/0.wav", "text": "yes"}, {"path": "clips/1.wav", "text": ""}])
    with pytest.raises(HfTransferError, match=r"1 clips of the train split have no transcript"):
        _load({**transcribed, "train": str(untranscribed)})
    with pytest.raises(HfTransferError, match=r"transcript column 'words' not found; the data has columns: path, text"):
        _load(transcribed, TranscriptArgs(text_column="words"))
    with pytest.raises(HfTransferError, match=r"--long_audio cut would cut transcribed speech"):
        load_speech_recognition(AudioDataArgs(train_file=transcribed["train"]), TranscriptArgs(), tiny_speech_config(), 16000, 20)


def test_a_fine_tuned_ctc_head_keeps_its_vocabulary(tmp_path):
    from transformers import AutoConfig

    model = save_speech_checkpoint(tmp_path / "ctc", ctc_vocabulary={"<pad>": 0, "<unk>": 1, "|": 2, "a": 3})
    config = AutoConfig.from_pretrained(model)
    built = make_tokenizer(build_vocabulary(["abc"]))
    with pytest.raises(HfTransferError, match=r"already has a CTC head tied to its own vocabulary: pass --tokenizer_name_or_path"):
        check_ctc_head(config, built, str(model), tokenizer_given=False)
    with pytest.raises(HfTransferError, match=r"the tokenizer has 6 tokens but the CTC head of .* has 4 outputs"):
        check_ctc_head(config, built, str(model), tokenizer_given=True)
    check_ctc_head(AutoConfig.from_pretrained(save_speech_checkpoint(tmp_path / "base")), built, "base", tokenizer_given=False)


# ---------------------------------------------------------------------------------------------------------
# Both recipes' loaders: one transcript rule, one normalisation
# ---------------------------------------------------------------------------------------------------------

RECIPES = ("speech_recognition", "whisper_speech_recognition")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("recognition")
    return {"speech_recognition": save_speech_checkpoint(root / "wav2vec2"),
            "whisper_speech_recognition": save_whisper_recognition_files(root / "whisper")}


def _recipe_load(recipe, model, tmp_path, train_texts, validation_texts):
    """The recipe's own `load` step on tables of 0.3 s clips with these transcripts, normalised alike in both recipes."""
    clips = [write_clip(tmp_path / "clips" / f"{i}.wav", 300.0 + 50 * i, 16000, 0.3) for i in range(len(train_texts))]
    tables = {split: write_table(tmp_path / f"{split}.csv", [{"path": f"clips/{c.name}", "text": t} for c, t in zip(clips, texts)])
              for split, texts in (("train", train_texts), ("validation", validation_texts))}
    task = importlib.import_module(f"recipes.{recipe}").TASK
    args = task.parse(["--model_name_or_path", str(model), "--train_file", str(tables["train"]), "--validation_file",
                       str(tables["validation"]), "--output_dir", str(tmp_path / "out"), "--text_case", "lower",
                       "--strip_punctuation", "true", "--long_audio", "skip"])
    return task.load(args)


@pytest.mark.parametrize("recipe", RECIPES)
def test_both_recipes_refuse_clips_whose_transcript_is_missing_or_normalised_away(recipe, checkpoints, tmp_path):
    # "" is read back as a missing value; "?!" is all punctuation, which --strip_punctuation deletes.
    with pytest.raises(HfTransferError) as error:
        _recipe_load(recipe, checkpoints[recipe], tmp_path, ["yes", "no", "yes no"], ["yes", "?!", ""])
    assert str(error.value) == ("2 clips of the validation split have no transcript (1 of them only punctuation, e.g. '?!', "
                                "which --strip_punctuation deletes); fill or remove them, or pass --strip_punctuation false")
    with pytest.raises(HfTransferError, match=r"^1 clips of the train split have no transcript; fill or remove them$"):
        _recipe_load(recipe, checkpoints[recipe], tmp_path, ["yes", "   ", "no"], ["yes"])


def test_both_recipes_load_the_same_clips_with_the_same_normalised_transcripts(checkpoints, tmp_path):
    ctc, whisper = (_recipe_load(recipe, checkpoints[recipe], tmp_path / recipe, ["Yes!", "no", "yes  no", "No."], ["YES", "no?"])
                    for recipe in RECIPES)
    for split, texts in (("train", ["yes", "no", "yes no", "no"]), ("validation", ["yes", "no"])):
        assert list(ctc.datasets[split]["text"]) == list(whisper.datasets[split]["text"]) == texts, split
    # CTC: the vocabulary built from the training transcripts, <pad> <unk> | then e n o s y.
    assert list(ctc.datasets["validation"]["labels"]) == [[7, 3, 6], [4, 5]]
    # Whisper: the checkpoint's tokenizer without the decoder start token (1): <|notimestamps|> (2), y e s / n o, <|endoftext|> (0).
    assert list(whisper.datasets["validation"]["labels"]) == [[2, 3, 4, 5, 0], [2, 6, 7, 0]]

