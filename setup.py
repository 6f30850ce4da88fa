"""Installs the ``DiffIR`` package (``pip install -e .``); entry scripts stay at the repository root."""
from setuptools import find_packages, setup


def requirements():
    with open("requirements.txt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="DiffIR-HDR",
    version="0.1.0",
    description="BasicSR-style training of DiffIR for single-image LDR→HDR restoration",
    packages=find_packages(include=["DiffIR", "DiffIR.*"]),
    python_requires=">=3.9",
    install_requires=requirements(),
    extras_require={"perceptual": ["torchvision"], "test": ["pytest>=7"]},
)
