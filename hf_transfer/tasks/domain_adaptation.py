"""The domain-adaptation task: its options, its `load` step, the objective it attaches to the model, its diagnostics,
and the synthetic shift's part in it (`--synthetic_shift_role`: shifted source rows, or a shifted stand-in target)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.data.shift.spec import TextShiftArgs
from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData, mixed_precision
from hf_transfer.tasks.shift import shift_plan, with_text_shift

METHODS = ("source_only", "dann", "coral", "mmd", "domain_norm", "self_training", "mlm")
# Defaults from benchmarks/amazon_domain_adaptation.py (MiniLM-L6, Amazon reviews), fixed there without target labels:
# MMD 0.01 and CORAL 100 are the largest weights keeping source validation within 2 points of source-only on the
# declared pair books->dvd (MMD at its paper's 1, and at 0.1, collapsed the features to one class; Deep CORAL's term
# scales with 1/(4 d^2), so its 1 does next to nothing). DANN keeps its paper's 1 (Ganin et al. 2016). The default
# method is MMD: of the four it had the most wins and the mildest worst case over source-only there (11 wins, 5
# losses, worst -3.4 points in 20 pair x seed runs; DANN 5 wins, 10 losses, worst -21). Other models: check the
# weight on source validation the same way.
DEFAULT_WEIGHTS = {"dann": 1.0, "coral": 100.0, "mmd": 0.01,
                   # A pseudo-labelled row counts as a labelled one (the term is already scaled by the selected share).
                   "self_training": 1.0,
                   # The masked-LM loss per predicted token beside the task's per row, at equal weight (UDALM's mix).
                   "mlm": 1.0}
SELF_TRAINING_DEFAULTS = {"threshold": 0.9, "share": 0.5, "start": 0.25, "ramp": 0.25, "teacher": "model",
                          "ema_decay": 0.999}
TEACHERS = ("model", "ema")


@dataclass
class AdaptationArgs:
    adaptation: str = field(
        default="mmd",
        metadata={"help": "source_only: the source task alone (the reference). dann: domain-adversarial (gradient "
                  "reversal). coral: match feature means and covariances. mmd (default): multi-kernel MMD. domain_norm: per-domain "
                  "normalisation statistics at each block's output LayerNorm (AdaBN), folded into the saved model. "
                  "self_training: confident target predictions join the task loss as labels, class-balanced. "
                  "mlm: the target text's masked-LM loss joins the task loss (UDALM). Several join one run with +, "
                  "e.g. mlm+self_training, each at its default weight."},
    )
    adaptation_weight: float | None = field(
        default=None, metadata={"help": f"Weight of the adaptation loss (one method of {', '.join(DEFAULT_WEIGHTS)}; "
                                        f"defaults {DEFAULT_WEIGHTS})."}
    )
    target_per_source: int = field(
        default=1, metadata={"help": "Target rows in every batch per source row (the batch's fixed proportion)."}
    )
    warmup_gamma: float | None = field(
        default=None,
        metadata={"help": "dann, coral, mmd: steepness of the warm-up 2/(1+exp(-gamma p))-1, p = step/max_steps, of DANN's "
                  "reversal coefficient and of CORAL's and MMD's weight (default 10; 0: no warm-up)."},
    )
    domain_head_hidden: int | None = field(default=None, metadata={"help": "dann: hidden units of the domain classifier (default 256)."})
    domain_head_lr_multiplier: float | None = field(
        default=None, metadata={"help": "dann: the domain classifier's learning rate as a multiple of --learning_rate (default 1)."}
    )
    coral_means: bool | None = field(default=None, metadata={"help": "coral: also match the feature means (default true)."})
    mmd_kernels: int | None = field(default=None, metadata={"help": "mmd: number of Gaussian kernels (default 5)."})
    mmd_kernel_multiplier: float | None = field(default=None, metadata={"help": "mmd: ratio of neighbouring bandwidths (default 2)."})
    domain_norm_blocks: int | None = field(
        default=None, metadata={"help": "domain_norm: per-domain statistics at the top N blocks (default: every block)."}
    )
    self_training_threshold: float | None = field(
        default=None, metadata={"help": "self_training: the confidence a target prediction needs to become a label (default 0.9)."}
    )
    self_training_share: float | None = field(
        default=None,
        metadata={"help": "self_training: at most this share of each predicted class's target rows (its most confident) "
                  "in a batch becomes labels, the same share for every class (default 0.5)."},
    )
    self_training_start: float | None = field(
        default=None,
        metadata={"help": "self_training: the share of the run trained on the source alone before pseudo-labels join "
                  "(default 0.25)."},
    )
    self_training_ramp: float | None = field(
        default=None, metadata={"help": "self_training: the share of the run over which their weight then rises to full (default 0.25)."}
    )
    self_training_teacher: str | None = field(
        default=None,
        metadata={"help": "self_training: who labels the target rows: model (its own predictions, the default) or ema "
                  "(a moving average of its weights: steadier labels, one more forward pass of the target rows)."},
    )
    self_training_ema_decay: float | None = field(
        default=None, metadata={"help": "self_training with --self_training_teacher ema: the average's decay per step (default 0.999)."}
    )
    mlm_probability: float | None = field(
        default=None, metadata={"help": "mlm: the share of each target row's tokens masked for prediction (default 0.15)."}
    )
    mlm_head_warmup_steps: str | None = field(
        default=None,
        metadata={"help": "mlm: optimizer steps at the start in which the masked-LM loss trains its head alone (the "
                  "encoder's output reaches it detached; the source task trains as usual). auto (default): a fifth of "
                  "the run, at most 300 steps, when the checkpoint has no masked-LM head (a sentence-embedding model), "
                  "0 when it has one. 0: off."},
    )
    diagnostic_samples: int = field(
        default=500,
        metadata={"help": "Rows per domain for the proxy A-distance before and after training (0: no diagnostics)."},
    )
    feature_views: bool = field(
        default=False, metadata={"help": "Write domain_features.png: PCA of the features before and after, coloured by domain."}
    )

    def __post_init__(self) -> None:
        self.adaptation = self.adaptation.strip()
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise HfTransferError(f"unknown --adaptation '{self.adaptation}'; choose one of {', '.join(METHODS)}, or "
                                  "several joined by + (mlm+self_training)")
        if len(self.methods) > 1 and ("source_only" in self.methods or len(set(self.methods)) < len(self.methods)):
            raise HfTransferError(f"--adaptation {self.adaptation}: a combination joins different methods, without "
                                  "source_only (the reference, on its own)")
        if len(self.methods) > 1 and self.adaptation_weight is not None:
            raise HfTransferError(f"--adaptation_weight sets one method's weight; {self.adaptation} runs each method at "
                                  "its default weight: drop --adaptation_weight")
        if self.mlm_head_warmup_steps is not None:
            from hf_transfer.tasks.masked_lm import checked_warmup_steps

            self.mlm_head_warmup_steps = checked_warmup_steps(self.mlm_head_warmup_steps)
        if self.mlm_probability is not None and not 0 < self.mlm_probability < 1:
            raise HfTransferError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        only_for = {
            "warmup_gamma": ("dann", "coral", "mmd"), "domain_head_hidden": ("dann",),
            "domain_head_lr_multiplier": ("dann",),
            "coral_means": ("coral",), "mmd_kernels": ("mmd",), "mmd_kernel_multiplier": ("mmd",),
            "domain_norm_blocks": ("domain_norm",),
            "adaptation_weight": tuple(DEFAULT_WEIGHTS),
            **{f"self_training_{name}": ("self_training",) for name in SELF_TRAINING_DEFAULTS},
            "mlm_probability": ("mlm",), "mlm_head_warmup_steps": ("mlm",),
        }
        for option, methods in only_for.items():
            if getattr(self, option) is not None and not set(methods) & set(self.methods):
                raise HfTransferError(f"--{option} applies to --adaptation {' or '.join(methods)}, not '{self.adaptation}'")
        for option in ("adaptation_weight", "warmup_gamma"):
            value = getattr(self, option)
            if value is not None and not value >= 0:  # also refuses NaN
                raise HfTransferError(f"--{option} must be >= 0, got {value}")
        if self.domain_head_lr_multiplier is not None and not self.domain_head_lr_multiplier > 0:
            raise HfTransferError(f"--domain_head_lr_multiplier must be > 0, got {self.domain_head_lr_multiplier}")
        for option in ("target_per_source", "domain_head_hidden", "mmd_kernels"):
            value = getattr(self, option)
            if value is not None and value < 1:
                raise HfTransferError(f"--{option} must be at least 1, got {value}")
        if self.mmd_kernel_multiplier is not None and not self.mmd_kernel_multiplier > 1:
            raise HfTransferError(f"--mmd_kernel_multiplier must be > 1, got {self.mmd_kernel_multiplier}")
        for option, low, high, closed in (("threshold", 0.0, 1.0, "(0, 1]"), ("share", 0.0, 1.0, "(0, 1]")):
            value = getattr(self, f"self_training_{option}")
            if value is not None and not low < value <= high:
                raise HfTransferError(f"--self_training_{option} must be in {closed}, got {value}")
        if self.self_training_start is not None and not 0 <= self.self_training_start < 1:
            raise HfTransferError(f"--self_training_start is a share of the run, in [0, 1), got {self.self_training_start}")
        if self.self_training_ramp is not None and not 0 <= self.self_training_ramp <= 1:
            raise HfTransferError(f"--self_training_ramp is a share of the run, in [0, 1], got {self.self_training_ramp}")
        if self.self_training_teacher is not None and self.self_training_teacher not in TEACHERS:
            raise HfTransferError(f"unknown --self_training_teacher '{self.self_training_teacher}'; choose model or ema")
        if self.self_training_ema_decay is not None:
            if self.self_training_teacher != "ema":
                raise HfTransferError("--self_training_ema_decay applies to --self_training_teacher ema")
            if not 0 < self.self_training_ema_decay < 1:
                raise HfTransferError(f"--self_training_ema_decay must be in (0, 1), got {self.self_training_ema_decay}")
        if self.diagnostic_samples < 0:
            raise HfTransferError(f"--diagnostic_samples must be >= 0, got {self.diagnostic_samples}")
        if self.feature_views and not self.diagnostic_samples:
            raise HfTransferError("--feature_views draws the diagnostics' features: give --diagnostic_samples > 0")

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods of this run: one, or several joined by +."""
        return tuple(m.strip() for m in self.adaptation.split("+") if m.strip())

    @property
    def weight(self) -> float:
        """The weight of a one-method run."""
        return self.weight_of(self.adaptation)

    def weight_of(self, method: str) -> float:
        default = DEFAULT_WEIGHTS.get(method, 0.0)
        return default if self.adaptation_weight is None or len(self.methods) > 1 else self.adaptation_weight

    @property
    def report(self) -> dict:
        """What metrics.json records of the method(s) and their settings."""
        weighted = [m for m in self.methods if m in DEFAULT_WEIGHTS]
        found = {"adaptation": self.adaptation,
                 "adaptation_weight": self.weight if len(self.methods) == 1 and weighted else None}
        if len(self.methods) > 1:
            found["adaptation_weights"] = {m: self.weight_of(m) for m in weighted}
        if "self_training" in self.methods:
            found |= {f"self_training_{name}": self.self_training(name) for name in SELF_TRAINING_DEFAULTS}
        if "mlm" in self.methods:
            found["mlm_probability"] = self.masking_probability
        return found

    @property
    def masking_probability(self) -> float:
        return 0.15 if self.mlm_probability is None else self.mlm_probability

    def self_training(self, name: str):
        """A --self_training_<name> option, or its default."""
        value = getattr(self, f"self_training_{name}")
        return SELF_TRAINING_DEFAULTS[name] if value is None else value

    @property
    def uses_target_in_training(self) -> bool:
        return self.adaptation != "source_only"


SHIFT_ROLES = ("source", "target")


@dataclass
class DomainShiftArgs(TextShiftArgs):
    """The text recipe's shift options, and what the shifted rows are for in domain adaptation."""

    synthetic_shift_role: str | None = field(
        default=None,
        metadata={"help": "What --synthetic_shift's rows are for. source (the default with target data): the source's "
                  "training rows are shifted toward the target's condition, on the fly, and the real target rows feed "
                  "the adaptation objective. target (the default, and the only role, without --target_file): a shifted "
                  "copy of the source's training texts stands in as the unlabelled target set the objective adapts to."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.synthetic_shift_role is not None and self.synthetic_shift_role not in SHIFT_ROLES:
            raise HfTransferError(f"unknown --synthetic_shift_role '{self.synthetic_shift_role}'; choose source or target")
        if self.synthetic_shift_role is not None and self.synthetic is None:
            raise HfTransferError("--synthetic_shift_role says what --synthetic_shift's rows are for: give "
                                  "--synthetic_shift too")


def shift_role(args: Args) -> str | None:
    """The role of --synthetic_shift's rows in this run (None without the option): as asked, else source when target
    data are named and target when none are."""
    from hf_transfer.data.domains import DomainDataArgs

    options = args.get(DomainShiftArgs)
    if options is None or options.synthetic is None:
        return None
    return options.synthetic_shift_role or ("source" if args[DomainDataArgs].has_target else "target")


def check_combination(args: Args) -> None:
    """Method x strategy combinations that cannot work, and a target the run cannot have, refused before anything
    loads."""
    from hf_transfer.data.domains import DomainDataArgs

    options, strategy = args[AdaptationArgs], args.strategy
    has_target, role = args[DomainDataArgs].has_target, shift_role(args)
    if not has_target and role is None:
        raise HfTransferError("name the target domain's data: --target_file or --target_dataset_name (or, without target "
                              "data, --synthetic_shift SPEC: the shifted source stands in as the target; docs/shift.md)")
    if role == "source" and not has_target:
        raise HfTransferError("--synthetic_shift_role source adapts to target data and none are named: give --target_file "
                              "(or --target_dataset_name), or use --synthetic_shift_role target")
    if role == "target" and has_target:
        raise HfTransferError("--synthetic_shift_role target makes the target set from the shifted source, and target "
                              "data are named too: drop --target_file/--target_dataset_name (--target_eval_file scores "
                              "labelled target rows) or use --synthetic_shift_role source")
    if role == "target" and args[DomainShiftArgs].synthetic_shift_probability < 1:
        raise HfTransferError("--synthetic_shift_probability below 1 leaves rows clean, and with --synthetic_shift_role "
                              "target a clean row of the stand-in target is a source row: drop the option")
    if strategy.cache_frozen_prefix and options.uses_target_in_training:
        raise HfTransferError("--cache_frozen_prefix is not offered with domain adaptation (target rows join every "
                              "batch); drop it or use --adaptation source_only")
    if "domain_norm" in options.methods and strategy.strategy in ("lora", "peft"):
        raise HfTransferError("--adaptation domain_norm folds the target's statistics into the LayerNorm weights of the "
                              f"saved model, which a {strategy.strategy} adapter does not save; use --strategy full, freeze "
                              "or gradual")


def load_domain_adaptation_task(args: Args) -> TaskData:
    """Source and target text, the model's config and tokenizer, batches of both domains, accuracy on each."""
    from hf_transfer.data.domains import (
        DomainBatchCollator,
        DomainDataArgs,
        load_domains,
        with_domain,
    )
    from hf_transfer.data.text import text_collator
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.loading import load_config, load_tokenizer
    from hf_transfer.tasks.text_classification import ensure_pad_token

    check_combination(args)
    options, data_args = args[AdaptationArgs], args[DomainDataArgs]
    config = load_config(args.model)
    args.strategy.check_config(config)
    tokenizer = load_tokenizer(args.model)
    ensure_pad_token(tokenizer, config)
    plan, role = shift_plan(args), shift_role(args)  # --synthetic_shift, --eval_shift (hf_transfer/tasks/shift.py)
    # The rows the plan shifts as the text recipe's does: with the target role no training row, only evaluation copies.
    rows_plan = without_training_shift(plan) if role == "target" else plan
    paired = options.target_per_source if options.uses_target_in_training else 0
    domains = load_domains(data_args, tokenizer, seed=args.training.seed, paired=paired, keep_text=rows_plan is not None,
                           stand_in_target=stand_in_target(plan) if role == "target" else None,
                           truth="self_training" in options.methods)
    config.id2label = dict(enumerate(domains.label_names))
    config.label2id = {name: i for i, name in enumerate(domains.label_names)}
    data = TaskData(
        datasets=domains.datasets,
        collator=text_collator(data_args, tokenizer, mixed_precision=mixed_precision(args.training)),
        processing_class=tokenizer,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={**domains.report, **options.report,
                "target_per_source": options.target_per_source if options.uses_target_in_training else 0},
        eval_splits=("validation", "test", "target"),
        extra={"target": domains.target, "padding": text_collator(data_args, tokenizer, mixed_precision=False)},
    )
    # The shift's collator wraps the padding one, inside the domain batches: it sees each source row's own text and
    # number, and the target rows (which carry neither) pass through it as they are.
    data = with_text_shift(data, rows_plan, args, tokenizer, [domains.report["text_column"]], data_args.max_seq_length,
                           also_scored=("target",))
    if role is not None:
        data.report = {**data.report, **plan.report, "synthetic_shift_role": role}
    if options.uses_target_in_training:
        # Evaluation batches say their domain too (per-domain normalisation maps target rows: the scored target's and
        # its shifted copies', `shifted_target`).
        for split in [s for s in data.datasets if s != "train"]:
            data.datasets[split] = with_domain(data.datasets[split], 1 if split.endswith("target") else 0)
        data.collator = DomainBatchCollator(data.collator, domains.target, masking=target_masking(args, tokenizer, data))
    return data


def target_masking(args: Args, tokenizer, data: TaskData):
    """The masked-LM objective's masking of the target rows (None without it), keyed by each target row's index, the
    seed and the epoch (a `TrainingEpoch` the data registers as a callback)."""
    from hf_transfer.data.mlm import RowKeyedMasking
    from hf_transfer.data.randomness import TARGET_MASK_STREAM, TrainingEpoch

    options = args[AdaptationArgs]
    if "mlm" not in options.methods:
        return None
    if tokenizer.mask_token is None:
        raise HfTransferError("--adaptation mlm masks the target text and this tokenizer has no mask token; use an "
                              "encoder's (BERT, RoBERTa, DistilBERT) or another method")
    epoch = TrainingEpoch()
    data.callbacks = [*data.callbacks, epoch]
    return RowKeyedMasking(tokenizer, options.masking_probability, seed=args.training.seed, stream=TARGET_MASK_STREAM,
                           epoch=epoch)


def without_training_shift(plan):
    """`plan` with its evaluation shifts only (None without any): the target role shifts no training row."""
    import copy

    if plan is None or not plan.evaluations:
        return None
    evaluations_only = copy.copy(plan)
    evaluations_only.synthetic = None
    return evaluations_only


def stand_in_target(plan):
    """The target role's target texts from the source's training texts: row i through --synthetic_shift with the
    generator the source role gives it in the first epoch, `default_rng([seed, 0, i])`: fixed, the same in every run
    with this seed. A shift that leaves most texts as they are would make the target the source: refused."""
    from hf_transfer.data.domains import SHARED_WITH_SOURCE

    def shifted(texts: list[str]) -> list[str]:
        out = [plan.synthetic(text, plan.training_generator(i, epoch=0)) for i, text in enumerate(texts)]
        unchanged = sum(a == b for a, b in zip(texts, out))
        if unchanged > SHARED_WITH_SOURCE * len(texts):
            raise HfTransferError(f"--synthetic_shift {plan.synthetic} leaves {unchanged} of the {len(texts)} source "
                                  "training texts unchanged, so the stand-in target would be the source; raise its strength")
        return out

    return shifted


def build_objective(model, options: AdaptationArgs, method: str, args: Args | None = None):
    """The objective of `method` for `model` (None for source_only); `args` (the run's) for those that load weights."""
    from hf_transfer.adaptation.objectives import (
        Coral,
        DomainAdversarial,
        DomainNormalisation,
        MultiKernelMMD,
        SelfTraining,
        feature_width,
    )

    weight = options.weight_of(method)
    gamma = 10.0 if options.warmup_gamma is None else options.warmup_gamma
    if method == "dann":
        return DomainAdversarial(feature_width(model), weight, hidden=options.domain_head_hidden or 256, gamma=gamma,
                                 head_lr_multiplier=options.domain_head_lr_multiplier or 1.0)
    if method == "coral":
        return Coral(weight, means=True if options.coral_means is None else options.coral_means, gamma=gamma)
    if method == "mmd":
        return MultiKernelMMD(weight, kernels=options.mmd_kernels or 5, multiplier=options.mmd_kernel_multiplier or 2.0,
                              gamma=gamma)
    if method == "domain_norm":
        return DomainNormalisation(model, blocks=options.domain_norm_blocks)
    if method == "self_training":
        return SelfTraining(model, weight, **{name: options.self_training(name) for name in SELF_TRAINING_DEFAULTS},
                            every_parameter=args is not None and args.strategy.strategy == "gradual")
    if method == "mlm":
        return target_masked_lm(model, options, args)
    return None


def target_masked_lm(model, options: AdaptationArgs, args: Args):
    """The masked-LM objective: the checkpoint's own masked-LM head (random when it has none) on the classifier's
    encoder, with the head warm-up `--mlm_head_warmup_steps` asks for (auto: a new head's)."""
    from hf_transfer.adaptation.objectives import TargetMaskedLM
    from hf_transfer.models.loading import load_config, masked_lm_with_head
    from hf_transfer.tasks.masked_lm import auto_warmup_steps

    masked_lm, head_is_new = masked_lm_with_head(args.model, load_config(args.model))
    given = options.mlm_head_warmup_steps
    warmup = (auto_warmup_steps if head_is_new else (lambda max_steps: 0)) if given in (None, "auto") else (
        lambda max_steps: int(given))
    return TargetMaskedLM(model, masked_lm, options.weight_of("mlm"), warmup=warmup, head_was_missing=head_is_new)


def prepare_adaptation_model(model, args: Args):
    """The strategy first (freeze, LoRA, ...), then the method's objective joins the model (and so the optimizer,
    the layer map's head group and checkpoints; never the saved classifier)."""
    from hf_transfer.strategies import apply_strategy
    from hf_transfer.trainer import attach_objective

    model = apply_strategy(model, args.strategy)
    options = args[AdaptationArgs]
    for method in options.methods:
        objective = build_objective(model, options, method, args)
        if objective is not None:
            attach_objective(model, method, objective)
    return model


def _samples(data: TaskData, n: int, seed: int):
    import numpy as np

    def first(dataset):
        order = np.random.default_rng(seed).permutation(len(dataset))[:n]
        return dataset.select(sorted(order.tolist()))

    return first(data.datasets["train"]), first(data.extra["target"])


def _diagnose(trainer, args: Args, data: TaskData, when: str) -> tuple:
    """The diagnostic rows' features, how far apart the domains are in them (proxy A-distance, and the CORAL and MMD
    divergences over the whole sample: what the methods shrink, batch by batch, in training), and the target rows'
    logits."""
    import torch

    from hf_transfer.adaptation.diagnostics import domain_features, features_and_logits, proxy_a_distance
    from hf_transfer.adaptation.objectives import SOURCE, TARGET, coral_loss, mmd_loss

    source, target = _samples(data, args[AdaptationArgs].diagnostic_samples, args.training.seed)
    padding = data.extra["padding"]
    target_features, target_logits = features_and_logits(trainer.model, target, padding, TARGET)
    features = (domain_features(trainer.model, source, padding, SOURCE), target_features)
    s, t = (torch.from_numpy(f).double() for f in features)
    return features, {f"proxy_a_distance_{when}": round(proxy_a_distance(*features, seed=args.training.seed), 4),
                      f"coral_divergence_{when}": float(coral_loss(s, t)),
                      f"mmd_divergence_{when}": float(mmd_loss(s, t))}, target_logits


def label_free_selection(trainer, args: Args, data: TaskData, target: tuple) -> dict:
    """Criteria for choosing a method or weight without target labels (hf_transfer/adaptation/selection.py), from the
    source validation rows and the diagnostic sample of target rows (`target`: its features and logits, as the
    diagnostics computed them): the target prediction entropy, the importance-weighted validation risk (IWV) and its
    DEV form. None of them reads a target label."""
    from hf_transfer.adaptation.diagnostics import features_and_logits
    from hf_transfer.adaptation.objectives import SOURCE
    from hf_transfer.adaptation.selection import label_free_scores

    validation = data.datasets.get("validation")
    if validation is None or len(validation) < 2:
        return {}
    features, logits = features_and_logits(trainer.model, validation, data.extra["padding"], SOURCE)
    return label_free_scores((features, logits, validation["labels"]), target, seed=args.training.seed)


def diagnose_before(trainer, args: Args, data: TaskData) -> dict:
    """Before training: how far apart the domains are in the starting model's features (a `Task.before_train`)."""
    if not args[AdaptationArgs].diagnostic_samples:
        return {}
    data.extra["features_before"], found, _ = _diagnose(trainer, args, data, "before")
    return found


def masked_lm_report(trainer) -> dict:
    """metrics.json's record of the masked-LM objective: whether its head was new, the warm-up's steps, and the
    logged masked-LM loss at the first log, at the hand-over (the last log inside the warm-up) and at the end."""
    from hf_transfer.adaptation.objectives import TargetMaskedLM
    from hf_transfer.trainer import model_objectives

    objective = next((o for o in model_objectives(trainer.model).values() if isinstance(o, TargetMaskedLM)), None)
    if objective is None:
        return {}
    steps = objective.warmup_steps(trainer.state.max_steps)
    logged = [(e["step"], e["mlm_loss"]) for e in trainer.state.log_history if "mlm_loss" in e]
    handover = [loss for step, loss in logged if step <= steps]
    return {"mlm_head_was_missing": objective.head_was_missing, "mlm_head_warmup_steps": steps,
            "mlm_loss_first": logged[0][1] if logged else None,
            "mlm_loss_at_handover": handover[-1] if steps and handover else None,
            "mlm_loss_last": logged[-1][1] if logged else None}


def diagnose_after(trainer, args: Args, data: TaskData, train_metrics: dict) -> dict:
    """After training: the masked-LM objective's record, the proxy A-distance again, and the feature view when asked
    (a `Task.after_train`)."""
    from pathlib import Path

    options = args[AdaptationArgs]
    objectives = masked_lm_report(trainer)
    if not options.diagnostic_samples:
        return objectives
    after, found, target_logits = _diagnose(trainer, args, data, "after")
    found = {**objectives, **found, **label_free_selection(trainer, args, data, (after[1], target_logits))}
    if options.feature_views and trainer.is_world_process_zero():
        from hf_transfer.adaptation.diagnostics import plot_domain_views

        plot_domain_views({"before training": data.extra["features_before"], f"after ({options.adaptation})": after},
                          Path(args.training.output_dir))
    return {**found, "diagnostic_samples_per_domain": len(after[0])}


METHOD_TEXT = {
    "source_only": "none: the source task alone (the reference arm)",
    "dann": "domain-adversarial training (DANN, Ganin et al. 2016): a domain classifier on the pooled features, its "
            "gradient reversed into the encoder",
    "coral": "CORAL (Sun & Saenko 2016): the source and target features' covariances (and means) matched",
    "mmd": "multi-kernel MMD (Long et al. 2015) between the source and target features",
    "domain_norm": "per-domain normalisation (AdaBN): the blocks' output LayerNorms use each domain's own statistics; "
                   "the target domain's are folded into the saved weights",
    "self_training": "class-balanced self-training: confident predictions on the unlabelled target rows joined the "
                     "source task's loss as labels",
    "mlm": "a masked-LM objective on the target text (UDALM, Karouzos et al. 2021): the target rows' masked-LM loss "
           "joined the source task's, on the same encoder",
}


def method_text(method: str) -> str:
    return "; ".join(METHOD_TEXT.get(m, m) for m in method.split("+"))


def adaptation_card_notes(args: Args, results: dict) -> dict[str, list[str]]:
    """The model card's lines for a domain-adaptation run: the method, the target data, target beside source accuracy,
    and what the target score means."""
    from hf_transfer.data.domains import DomainDataArgs

    method, weight = results.get("adaptation"), results.get("adaptation_weight")
    data_args = args[DomainDataArgs]
    target = data_args.target_file or data_args.target_dataset_name
    role, condition = results.get("synthetic_shift_role"), f"`--synthetic_shift` {results.get('synthetic_shift_means')}"
    model = [f"**Domain adaptation:** `{method}`" + (f" (weight {weight:g})" if weight is not None else "")
             + f": {method_text(method)}",
             f"**Target domain:** none given; a synthetic stand-in: the source's {results.get('target_rows', '?')} "
             f"training texts through {condition}, without their labels" if role == "target" else
             f"**Target domain:** `{Path(target).name if data_args.target_file else target}`, "
             f"{results.get('target_rows', '?')} rows in the training stream, without their labels"]
    if role == "source":
        share = results.get("synthetic_shift_probability", 1.0)
        model.append(f"**Synthetic condition:** the source's training rows shifted toward the target's condition with "
                     f"{condition}, drawn anew each epoch" + (f", on a share {share:g} of the rows" if share < 1 else ""))
    if "target_accuracy" in results:
        source = results.get("validation_accuracy")
        model.append(f"**Accuracy:** target {100 * results['target_accuracy']:.1f}"
                     + (f", source validation {100 * source:.1f}" if source is not None else "")
                     + f" ({results.get('target_scored_rows', '?')} target rows scored)")
    if "proxy_a_distance_before" in results and "proxy_a_distance_after" in results:
        model.append(f"**Proxy A-distance** (0: the domains' features indistinguishable, 2: separable): "
                     f"{results['proxy_a_distance_before']:.2f} before training, {results['proxy_a_distance_after']:.2f} after")
    if "dann" in method.split("+"):
        model.append("The domain classifier trains beside the model and is not saved: the checkpoint is the plain "
                     "classifier")
    if "mlm" in method.split("+"):
        model.append("The masked-LM head trained beside the model and is not saved: the checkpoint is the plain "
                     "classifier" + (f"; the head was new and trained alone for the first {results['mlm_head_warmup_steps']} "
                                     "steps" if results.get("mlm_head_warmup_steps") else ""))
    scored = ("the labelled rows of `--target_eval_file`, never seen in training" if data_args.target_eval_file else
              "the target rows the model adapted to without their labels (the transductive protocol of the "
              "domain-adaptation literature)")
    limitations = [
        f"Target accuracy is measured on {scored}. hf_transfer chooses no option on target labels; any option tuned on "
        "them makes the target score optimistic.",
        "Source validation accuracy is from the source domain's held-out rows; expect other domains than these two to "
        "score differently.",
    ]
    if role == "target":
        limitations.append("No target data were given: the model adapted to a synthetic condition made from the source "
                           f"({condition}); how well it stands for a real target domain is not measured here.")
    if "domain_norm" in method.split("+"):
        limitations.append("The saved LayerNorms carry the target domain's statistics: use this model on target-domain "
                           "text (source-domain text would need the source statistics, which are not saved).")
    return {"model": model, "limitations": limitations}


def adaptation_lines(results: dict) -> list[str]:
    """Summary lines: target accuracy beside source accuracy, and how far apart the domains looked."""
    lines = [f"adaptation: {results.get('adaptation')}"
             + (f" (weight {results['adaptation_weight']:g})" if results.get("adaptation_weight") is not None else "")]
    if "target_accuracy" in results:
        source = results.get("validation_accuracy")
        gap = f", gap {100 * (source - results['target_accuracy']):+.1f} points" if source is not None else ""
        lines.append(f"accuracy: source (validation) {100 * source:.1f}, target {100 * results['target_accuracy']:.1f}{gap}"
                     if source is not None else f"accuracy: target {100 * results['target_accuracy']:.1f}")
    if "proxy_a_distance_before" in results and "proxy_a_distance_after" in results:
        lines.append(f"proxy A-distance (0 = domains indistinguishable, 2 = separable): "
                     f"{results['proxy_a_distance_before']:.3f} before -> {results['proxy_a_distance_after']:.3f} after")
    if "iwv_risk" in results:
        lines.append(f"label-free criteria (lower is better; no target label read): target prediction entropy "
                     f"{results['target_prediction_entropy']:.3f}, importance-weighted validation risk "
                     f"{results['iwv_risk']:.3f} (DEV {results['dev_risk']:.3f})")
    if "mlm_head_warmup_steps" in results:
        losses = [results.get(k) for k in ("mlm_loss_first", "mlm_loss_at_handover", "mlm_loss_last")]
        warmup = results["mlm_head_warmup_steps"]
        lines.append(f"mlm head warm-up: {warmup} steps, the head alone (encoder detached)" if warmup else
                     "mlm head warm-up: none (the checkpoint's head)" if not results.get("mlm_head_was_missing") else
                     "mlm head warm-up: none (off), though the head was new")
        lines.append("mlm loss: " + " -> ".join(f"{name} {loss:.3f}" for name, loss in
                                                zip(("first log", "hand-over", "end"), losses) if loss is not None))
    role = results.get("synthetic_shift_role")
    if role is not None:
        lines.append(f"synthetic shift ({SHIFT_ROLE_TEXT[role]}): {results.get('synthetic_shift_means')}")
    # --eval_shift's copies of the scored target beside it, as the run summary sets validation's (run/finish.py).
    for key in sorted(k for k in results if k.startswith("shifted") and k.endswith("_target_accuracy")):
        label, clean = key[: -len("_target_accuracy")], results.get("target_accuracy")
        if clean is not None:
            lines.append(f"{'target_accuracy (' + label + ')':<36} {results[key]:.4f} (clean {clean:.4f}, "
                         f"{results[key] - clean:+.4f})")
    return lines


SHIFT_ROLE_TEXT = {"source": "role source: the source's training rows shifted",
                   "target": "role target: the shifted source texts stand in as the target"}



