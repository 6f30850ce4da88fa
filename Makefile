# `make demo` trains the demo, `make test` runs the tests; both install what they need first.
# `make demo-stage2` distils stage 2 from the demo's stage 1 (training that first when its weights are missing),
# `make demo-deblur` trains the progressive deblur demo (train.py).
# An installed torch (a CUDA build, say) is never replaced: without one, the CPU build torch==2.13.0 (the tested
# version) is installed first; one older than 2.6 stops the install with what to do (pyproject.toml needs >=2.6,
# and pip would otherwise swap it for PyPI's newest build). The package is installed under the constraint
# torch==<the installed version>, so pip can never change torch.
# `make test` also installs the extras whose tests would otherwise be skipped (TEST_EXTRAS, its own stamp);
# `make install` and the demos need none of them.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
STAMP ?= .install.stamp
TEST_EXTRAS ?= test,wandb,onnx
EXTRAS_STAMP ?= $(STAMP).extras
TORCH_CHECK := import sys, torch; hasattr(getattr(torch, "compiler", None), "set_stance") or sys.exit( \
	f"torch {torch.__version__} is older than 2.6, which DiffIR needs (torch.compiler.set_stance). make does not " \
	"replace an installed torch: install a newer one yourself (the CUDA build for your driver from pytorch.org, " \
	"or $(TORCH_SPEC) for CPU), then run make again.")

# pip install -e ".[$(1)]" under the constraint torch==<the installed version>
pinned_install = $(PYTHON) -c 'import torch; print("torch==" + torch.__version__)' | $(PYTHON) -m pip install -e ".[$(1)]" -c /dev/stdin

.PHONY: install install-extras demo demo-stage2 demo-deblur test
install: $(STAMP)
install-extras: $(EXTRAS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -c '$(TORCH_CHECK)'
	$(call pinned_install,test)
	@touch $(STAMP)

$(EXTRAS_STAMP): $(STAMP)
	$(call pinned_install,$(TEST_EXTRAS))
	@touch $(EXTRAS_STAMP)

demo: $(STAMP)
	$(PYTHON) train_hdr.py -opt options/demo_DiffIRs1_hdr.yml

S1_DEMO_WEIGHTS := experiments/demo_DiffIRS1_hdr/models/net_g_latest.pth
demo-stage2: $(STAMP)
	@test -f $(S1_DEMO_WEIGHTS) || $(MAKE) demo
	$(PYTHON) train_hdr.py -opt options/demo_DiffIRs2_hdr.yml

demo-deblur: $(STAMP)
	$(PYTHON) train.py -opt options/demo_deblur_DiffIRS1.yml

test: $(EXTRAS_STAMP)
	$(PYTHON) -m pytest -q tests
