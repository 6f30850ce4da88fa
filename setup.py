"""A shim for BasicSR's habit `python setup.py develop`: everything (name, dependencies, extras, console scripts)
comes from pyproject.toml, the one source of truth; setuptools reads it there.

`develop` first makes sure torch is already installed (a fresh machine would otherwise get PyPI's multi-GB CUDA
build) and then installs under the constraint torch==<the installed version>, as `make install` does, so pip can
never replace it. Build tools (pip, `python -m build`) run this file too; for them it is a plain `setup()`.
"""
import os
import re
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version

from setuptools import setup
from setuptools.command.develop import develop

TORCH_FIRST = ("install torch first, the build you need: `pip install torch==2.13.0` (CPU, the tested version) or "
               "the CUDA build for your driver from pytorch.org; then run `python setup.py develop` again.")


def installed_torch() -> str:
    """The installed torch's version; stops with what to do when there is none or it is older than 2.6."""
    try:
        found = version("torch")
    except PackageNotFoundError:
        sys.exit(f"torch is not installed, and installing DiffIR-HDR now would pull PyPI's CUDA build: {TORCH_FIRST}")
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", found).groups())
    if (major, minor) < (2, 6):
        sys.exit(f"torch {found} is older than 2.6, which DiffIR needs (torch.compiler.set_stance), and this install "
                 f"does not replace an installed torch: {TORCH_FIRST}")
    return found


class PinnedTorchDevelop(develop):
    """setuptools' `develop` (an editable install by pip) with the installed torch pinned."""

    def run(self) -> None:
        pin = installed_torch()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "torch-constraint.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"torch=={pin}\n")
            old = os.environ.get("PIP_CONSTRAINT")
            os.environ["PIP_CONSTRAINT"] = " ".join(p for p in (old, path) if p)
            try:
                super().run()
            finally:
                if old is None:
                    os.environ.pop("PIP_CONSTRAINT")
                else:
                    os.environ["PIP_CONSTRAINT"] = old


setup(cmdclass={"develop": PinnedTorchDevelop})
