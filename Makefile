# `make demo` trains the demo, `make test` runs the tests; both install what they need first.
# `make demo-stage2` distils stage 2 from the demo's stage 1 (training that first when its weights are missing),
# `make demo-deblur` trains the progressive deblur demo (train.py).
# A CUDA torch that is already installed is kept; otherwise the CPU build torch==2.13.0 is installed.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
STAMP := .install.stamp

.PHONY: install demo demo-stage2 demo-deblur test
install: $(STAMP)

$(STAMP): setup.py requirements.txt
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) train_hdr.py -opt options/demo_DiffIRs1_hdr.yml

S1_DEMO_WEIGHTS := experiments/demo_DiffIRS1_hdr/models/net_g_latest.pth
demo-stage2: $(STAMP)
	@test -f $(S1_DEMO_WEIGHTS) || $(MAKE) demo
	$(PYTHON) train_hdr.py -opt options/demo_DiffIRs2_hdr.yml

demo-deblur: $(STAMP)
	$(PYTHON) train.py -opt options/demo_deblur_DiffIRS1.yml

test: $(STAMP)
	$(PYTHON) -m pytest -q tests
