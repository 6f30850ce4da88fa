# `make demo` trains the demo, `make test` runs the tests; both install what they need first.
# A CUDA torch that is already installed is kept; otherwise the CPU build torch==2.13.0 is installed.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
STAMP := .install.stamp

.PHONY: install demo test
install: $(STAMP)

$(STAMP): setup.py requirements.txt
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) train_hdr.py -opt options/demo_DiffIRs1_hdr.yml

test: $(STAMP)
	$(PYTHON) -m pytest -q tests
