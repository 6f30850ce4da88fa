"""Fixtures of every test; shared constants and builders are in helpers.py."""
import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT.parent / "shared" / "reference"

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def _session_check_cache(tmp_path_factory):
    """Dataset check caches of module fixtures (trained checkpoints) go to a tmp folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFIR_CACHE_DIR", str(tmp_path_factory.mktemp("check_cache")))
        yield


@pytest.fixture(autouse=True)
def _check_cache_in_tmp(tmp_path, monkeypatch):
    """Each test's dataset check cache is fresh and in its tmp folder."""
    monkeypatch.setenv("DIFFIR_CACHE_DIR", str(tmp_path / "check_cache"))


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference folder {REFERENCE} not present")
    return REFERENCE


@pytest.fixture
def records():
    """Records of the project logger (it stops propagating to the root logger once set up: caplog misses them)."""
    out = []

    class Keep(logging.Handler):
        def emit(self, record):
            out.append(record)

    logger, handler = logging.getLogger("DiffIR"), Keep(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)
