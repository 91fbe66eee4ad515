"""Model cards: the README.md of every output folder, the template model_card.md filled with the run's facts.

The functions here gather the facts, the template says them. Metadata for the Hub: the base model by its public
name (never a local path), data sets, language, licence, pipeline tag, tags, a model-index of the run's metrics.
The body: task, strategy, data (linking data_cards/), results beside the frozen baseline and the reference runs
recipes/compare.py hands over, training options, and how to load the model. Nothing here calls the Hub.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.evidence.compare import SCRATCH, lower_is_better, report_metric
from hf_transfer.models.loading import (
    DEFAULT_MODEL_LICENSE,
    DEFAULT_MODEL_NAME,
    ModelArgs,
    is_default_model,
    local_path,
)
from hf_transfer.sharing.adapters import (
    merge_adapter,
    peft_settings,
    save_adapter_config,
)
from hf_transfer.sharing.hub import SharingArgs

TEMPLATE = Path(__file__).with_name("model_card.md")
PROJECT_URL = "https://github.com/hf-transfer/hf_transfer"  # fallback; the installed package's metadata wins
PIPELINE_TAGS = {
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForAudioClassification": "audio-classification",
    "AutoModelForCTC": "automatic-speech-recognition",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForSeq2SeqLM": "text2text-generation",
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForTokenClassification": "token-classification",
}
# Scores a card reports, in this order (metrics.json keys are `<split>_<score>`).
SCORES = ("accuracy", "f1", "precision", "recall", "roc_auc", "mse", "rmse", "mae", "r2", "pearson", "spearman", "wer",
          "cer", "bleu", "chrf", "rouge1", "rouge2", "rougeL")
DATA_FIELD_PREFIXES = ("train", "validation", "test", "source_eval", "target")


@dataclass(frozen=True)
class KnownData:
    """A data set with a card in data_cards/<card>.md: the facts a model card repeats (known_data.yaml)."""

    card: str
    name: str
    languages: tuple[str, ...]
    licence: str
    caveat: str
    hub_id: str | None = None
    hub_names: tuple[str, ...] = ()


@functools.cache
def known_data() -> dict[str, KnownData]:
    import yaml

    table = yaml.safe_load(TEMPLATE.with_name("known_data.yaml").read_text(encoding="utf-8"))
    return {key: KnownData(card=key, **{k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()})
            for key, facts in table.items()}


def complete_output(task, args, data, trainer, results: dict, push=None) -> Path:
    """The step `finish` runs on rank 0 once metrics.json is written: the trained model's config beside a LoRA
    adapter, so its labels come back on reload (or, with --merge_lora, the merged full model in its place), then
    the card, README.md."""
    import torch
    from accelerate.utils import extract_model_from_parallel

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
    device = trainer.args.device
    device = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        {"cpu": "CPU", "mps": "Apple MPS"}.get(device.type, device.type)
    card = build_card(task, args, data, results, saved=saved, adapter=adapter, device=device,
                      repo_id=push.repo_id if push is not None else args.training.hub_model_id)
    card.save(out / "README.md")
    if not base_model_names(args) and not args.model.from_scratch:
        print("note: the model card names no base model: --model_name_or_path is a local folder; give its public "
              "name with --base_model_name", flush=True)
    return out / "README.md"


def public_name(value: str | None) -> str | None:
    """A model's public name: a Hub id as given, the embedded default's real name, or a Hub cache snapshot's repo id;
    None for any other local folder (its path means nothing elsewhere)."""
    if is_default_model(value):
        return DEFAULT_MODEL_NAME
    path = local_path(value)
    if path is None:
        return value or None
    match = re.search(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]", str(path.resolve()) + "/")
    return f"{match.group(1)}/{match.group(2)}" if match else None


def base_model_names(args) -> list[str]:
    """The base model's public names (one, or encoder and decoder); empty when none is known."""
    if args[SharingArgs].base_model_name:
        return [args[SharingArgs].base_model_name]
    # An encoder-decoder warm-started from two checkpoints (text_to_text) names its decoder's apart.
    paths = [args.model.model_name_or_path, *(getattr(instance, "decoder_name_or_path", None) for instance in args)]
    return list(dict.fromkeys(name for name in map(public_name, paths) if name))


def _local_card_data(value: str) -> dict:
    """The metadata of a local model folder's own card (README.md), {} without one; a local file, no Hub call."""
    path = local_path(value)
    if path is None or not (path / "README.md").is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path / "README.md").data.to_dict()
    except Exception:  # noqa: BLE001 - a hand-written README without valid metadata: no facts from it
        return {}


def model_license(args) -> str | None:
    if args[SharingArgs].license:
        return args[SharingArgs].license
    model = args.model.model_name_or_path
    return DEFAULT_MODEL_LICENSE if is_default_model(model) else _local_card_data(model).get("license")


@dataclass
class DataFacts:
    """Which data a run used: Hub data sets (id, configuration), local files (what for, file name: never the path),
    the known data sets among them, and the languages."""

    hub: list[tuple[str, str | None]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    known: list[KnownData] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)

    @property
    def hub_ids(self) -> list[str]:
        return list(dict.fromkeys([name for name, _ in self.hub] + [k.hub_id for k in self.known if k.hub_id]))

    @property
    def hub_config(self) -> str | None:
        return next((config for _, config in self.hub if config), None)

    @property
    def name(self) -> str:
        return ", ".join(k.name for k in self.known) or ", ".join(self.hub_ids) or "local files"

    @property
    def type(self) -> str:
        return (self.hub_ids or [k.card for k in self.known] or ["local"])[0]


def data_facts(args) -> DataFacts:
    """Which data the run used, from its options: Hub data sets by id, local files by name only."""
    from hf_transfer.data.text import SAMPLES

    table, facts, keys, paths = known_data(), DataFacts(), [], []
    for instance in args:
        if not dataclasses.is_dataclass(instance) or type(instance).__name__.endswith("TrainingArguments"):
            continue
        for prefix in ("", "target_"):  # domain adaptation names its target domain's Hub data set apart
            name, config = getattr(instance, f"{prefix}dataset_name", None), getattr(instance, f"{prefix}dataset_config_name", None)
            if name:
                facts.hub.append((name, config))
                keys.append(next((key for key, known in table.items() if name in known.hub_names),
                                 "sst2" if name.endswith("glue") and config == "sst2" else None))
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if value and isinstance(value, str) and f.name.startswith(DATA_FIELD_PREFIXES) and f.name.endswith(("_file", "_dir")):
                facts.files.append((f.name.removesuffix("_file").removesuffix("_dir").replace("_", " "), Path(value).name))
                paths.append(Path(value).expanduser().resolve())
    keys += ["embedded_reviews" if Path(SAMPLES).resolve() in path.parents else
             next((part for part in path.parts if part in table), None) for path in paths]
    facts.known = [table[key] for key in dict.fromkeys(keys) if key in table]
    facts.languages = list(args[SharingArgs].language or [])
    for known in facts.known if not facts.languages else []:  # multi30k: train.en + train.de name the languages used
        chosen = [code for code in known.languages if code in {path.suffix.lstrip(".") for path in paths}] or known.languages
        facts.languages += [code for code in chosen if code not in facts.languages]
    return facts


def project_url() -> str:
    """The project's repository, from the installed package's metadata (pyproject's [project.urls])."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = [entry.partition(",")[2].strip() for entry in metadata("hf-transfer-toolkit").get_all("Project-URL") or []]
    except PackageNotFoundError:
        urls = []
    return next((url.split("#")[0].rstrip("/") for url in urls if "github.com" in url), PROJECT_URL)


def scores(metrics: dict, prefix: str) -> dict[str, float]:
    values = {name: metrics.get(f"{prefix}_{name}") for name in SCORES}
    return {name: float(v) for name, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def reference_results(args) -> dict[str, dict]:
    """The reference runs recipes/compare.py handed over (--compare_references arm=folder): arm -> its metrics."""
    found = {}
    for entry in args[SharingArgs].compare_references or []:
        arm, _, folder = entry.partition("=")
        metrics = Path(folder) / "metrics.json"
        if metrics.is_file():
            found[arm] = json.loads(metrics.read_text())
        else:
            print(f"note: the model card leaves out the {arm} reference: {metrics} does not exist", flush=True)
    return found


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1.0 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_table(results: dict, references: dict[str, dict], primary: str) -> tuple[list[str], list[list[str]], list]:
    """The results table's columns and rows (metric, split, then one cell per column), and the model-index
    entries (split, score, value) of this model."""
    baseline = scores(results, "baseline")
    head = "ridge regression" if results.get("task_type") == "regression" else "logistic regression"
    columns = ["this model", *([f"frozen backbone + {head}"] if baseline else [])]
    columns += ["from scratch (compare)" if arm == SCRATCH else
                f"frozen features + {arm.removeprefix('frozen+').replace('_', ' ')} (compare)" for arm in references]
    rows, index = [], []
    for split in ("validation", "test", "target"):  # target: domain adaptation's scored target rows
        beside = [baseline if split == "validation" else {}] * bool(baseline) + [scores(m, split) for m in references.values()]
        for name, value in scores(results, split).items():
            rows.append([f"**{name}**" if f"{split}_{name}" == primary else name, split, _cell(value),
                         *(_cell(other[name]) if name in other else "" for other in beside)])
            index.append((split, name, value))
    after, before = results.get("perplexity_after"), results.get("perplexity_before")
    if isinstance(after, (int, float)):
        rows.append(["**perplexity**", "validation (held out)", _cell(float(after))] + [""] * (len(columns) - 1))
        index.append(("validation", "perplexity", float(after)))
        if isinstance(before, (int, float)):
            rows.append(["perplexity before training (the base model)", "validation (held out)", _cell(float(before))]
                        + [""] * (len(columns) - 1))
    return columns, rows, index


# Options the card states elsewhere (data, base model, licence) or that only say where files are.
_SKIPPED_OPTIONS = ("dataset_name", "dataset_config_name", "model_name_or_path", "base_model_name", "license", "language",
                    "feature_cache_dir", "cache_dir", "revision", "strategy")


def _shown(name: str, value) -> bool:
    if value in (None, "") or "token" in name or name.endswith(("_file", "_dir", "_path", "name_or_path")) or name in _SKIPPED_OPTIONS:
        return False
    if isinstance(value, str) and local_path(value) is not None:
        return False
    return isinstance(value, (bool, int, float, str)) or (isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value))


def recipe_options(args) -> list[tuple[str, str]]:
    """The recipe's options that differ from their defaults (the Trainer's own rows are the template's)."""
    from hf_transfer.run.outputs import OutputArgs

    rows = []
    for instance in args:
        if (type(instance).__name__.endswith("TrainingArguments") or isinstance(instance, (OutputArgs, SharingArgs))
                or not dataclasses.is_dataclass(instance)):
            continue
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if (isinstance(instance, ModelArgs) and f.name != "from_scratch") or value == default or not _shown(f.name, value):
                continue
            value = Path(value).name if f.name == "peft_config" else value
            rows.append((f"`--{f.name}`", " ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def _model_name(out: Path, repo_id: str | None) -> str:
    """The repository, else the output folder's name, with compare's seed_/fold_/size_/draw_ levels joined to their arm."""
    parts = [out.name]
    while re.fullmatch(r"(seed|fold|size|draw)_\d+", out.name) and out.parent != out:
        out = out.parent
        parts.insert(0, out.name)
    return repo_id or "-".join(parts)


def _versions(adapter: bool) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("hf-transfer-toolkit", "transformers", *(("peft",) if adapter else ()), "torch", "datasets", "huggingface_hub"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _adapter_details(adapter: dict) -> list[str]:
    """`r=8`, `alpha=16`, `dropout=0.1`, then the modules adapted and those trained whole."""
    details = [f"{key.removeprefix('lora_')}={adapter[key]}" for key in ("r", "lora_alpha", "lora_dropout") if key in adapter]
    modules = {"target_modules": "adapted modules", "modules_to_save": "trained whole"}
    return details + [f"{label}: {', '.join(map(str, adapter[key]))}" for key, label in modules.items() if adapter.get(key)]


def render(template: Path = TEMPLATE, **facts) -> str:
    """The template filled with `facts`. Its own Jinja environment, not ModelCard.from_template's: a fact the template
    names but nobody gave fails here (StrictUndefined) instead of leaving a blank in the card."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(code=lambda text: f"`{text}`", thousands="{:,}".format, quoted=json.dumps,
                       plain=lambda option: getattr(option, "value", option),  # an enum option by its value
                       hub_link=lambda model_id: f"[{model_id}](https://huggingface.co/{model_id})")
    env.tests["startswith"] = str.startswith
    return env.from_string(template.read_text(encoding="utf-8")).render(**facts)


def build_card(task, args, data, results: dict, *, saved: str = "full", adapter: dict | None = None,
               device: str = "CPU", repo_id: str | None = None):
    """The run's model card (a huggingface_hub ModelCard; nothing is fetched from the Hub)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from hf_transfer.run.launch import precision

    out = Path(args.training.output_dir)
    pipeline_tag = task.pipeline_tag or PIPELINE_TAGS.get(task.model_class, "text-classification")
    model_class = task.model_class if task.model_class in PIPELINE_TAGS else \
        next((cls for cls, tag in PIPELINE_TAGS.items() if tag == pipeline_tag), task.model_class)
    names, facts, licence = base_model_names(args), data_facts(args), model_license(args)
    bases = [] if args.model.from_scratch else names
    name = _model_name(out, repo_id)
    references = reference_results(args)
    columns, rows, index = results_table(results, references, report_metric(task.metric, results.get("task_type")))
    strategy = args.strategy.strategy
    tags = ["hf_transfer", "transfer-learning", f"strategy-{strategy}", *([strategy] if strategy in ("lora", "peft") else []),
            *(["merged-adapter"] if saved == "merged" else []), *(["from-scratch"] if args.model.from_scratch else [])]
    card_data = ModelCardData(
        base_model=(bases[0] if len(bases) == 1 else bases) or None, datasets=facts.hub_ids or None,
        language=facts.languages or None, license=licence, library_name="peft" if saved == "adapter" else "transformers",
        pipeline_tag=pipeline_tag, tags=tags, model_name=name,
        eval_results=[EvalResult(task_type=pipeline_tag, task_name=task.name, dataset_type=facts.type,
                                 dataset_name=facts.name, dataset_config=facts.hub_config, dataset_split=split,
                                 metric_type=metric, metric_name=f"{metric} ({split})", metric_value=round(value, 4))
                      for split, metric, value in index] or None,
        **({"base_model_relation": "adapter" if saved == "adapter" else "finetune"} if bases else {}),
    )
    given = args.model.model_name_or_path
    # A local checkpoint that an hf_transfer run wrote (continued pretraining, say) names its own base model.
    local_card = {} if names else _local_card_data(given)
    # What a reader passes to from_pretrained: the Hub repository, else the output folder as the user gave it.
    repo = repo_id or (str(args.training.output_dir) if not out.is_absolute() else f"path/to/{out.name}")
    content = render(
        card_data=card_data.to_yaml(), task=task, args=args, results=results, name=name, pipeline_tag=pipeline_tag,
        model_class=model_class, from_scratch=args.model.from_scratch, base_names=names,
        local_model=Path(given).name, project_url=project_url(),
        lineage=local_card.get("base_model") if "hf_transfer" in (local_card.get("tags") or []) else None,
        labels=results.get("label_names") or (data.report.get("label_names") if data is not None else None),
        target=results.get("target_column") if results.get("task_type") == "regression" else None,
        encoder_decoder=any(getattr(i, "encoder_decoder_from", None) or getattr(i, "decoder_name_or_path", None) for i in args),
        adapter=adapter, adapter_details=_adapter_details(adapter) if adapter else [],
        notes=task.card_notes(args, results) if task.card_notes else {},
        saved=saved, processor_type=type(data.processing_class).__name__ if data is not None else "", licence=licence, data=facts,
        sizes={split: len(dataset) for split, dataset in data.datasets.items()} if data is not None else None,
        columns=columns, rows=rows, references=references, baseline=any(k.startswith("baseline_") for k in results),
        lower_is_better=[n.upper() if n != "perplexity" else n for n in dict.fromkeys(n for _, n, _ in index) if lower_is_better(n)],
        recipe_options=recipe_options(args), precision=precision(args.training), device=device, repo=repo,
        source_prefix=next((i.source_prefix for i in args if getattr(i, "source_prefix", None)), None),
        versions=_versions(saved == "adapter"),
    )
    return ModelCard(content)
