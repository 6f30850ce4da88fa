"""Packaging: pyproject.toml's dependencies and console scripts, the Makefile's torch handling, the sdist, and the
inference defaults a pip-installed ``diffir-infer`` needs outside the repository."""
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from importlib import import_module
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement

from DiffIR import cli_entry
from DiffIR.utils.errors import OptionError

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"diffir-train": "train_hdr", "diffir-train-progressive": "train_progressive", "diffir-test": "evaluate",
           "diffir-infer": "infer", "diffir-lmdb": "create_lmdb", "diffir-check": "check_dataset",
           "diffir-export": "export"}


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements() -> dict:
    return {Requirement(r).name.lower(): Requirement(r) for r in _project()["dependencies"]}


# ------------------------------------------------------------------ pyproject.toml
def test_dependencies_are_static_and_complete() -> None:
    project = _project()
    assert "dependencies" not in project.get("dynamic", [])
    reqs = _requirements()
    assert {"torch", "numpy", "opencv-python-headless", "pyyaml", "openexr", "safetensors", "lmdb"} <= set(reqs)
    assert "einops" not in reqs  # the networks do not use it
    extras = project["optional-dependencies"]
    assert set(extras) >= {"perceptual", "test", "wandb", "onnx"}
    assert {Requirement(r).name for r in extras["onnx"]} >= {"onnx", "onnxruntime"}
    assert not any(Requirement(r).name == "torch" for deps in extras.values() for r in deps)


# ------------------------------------------------------------------ requirements.txt and setup.py: thin entry points
def test_requirements_txt_is_pyprojects_list_without_torch() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = {str(Requirement(line)) for line in lines if line}
    expected = {str(Requirement(r)) for r in _project()["dependencies"] if Requirement(r).name != "torch"}
    assert listed == expected  # same names, same bounds: edit both when a dependency changes
    text = (ROOT / "requirements.txt").read_text()
    assert "pip install torch==2.13.0" in text and "pytorch.org" in text  # how to install torch first


def _run_setup_py(*args: str, fake_pip: Path = None):
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    if fake_pip is not None:  # a `python -m pip` that only logs its arguments and the constraint files' lines
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(fake_pip), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "setup.py", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.slow
def test_setup_py_reads_pyproject_and_develop_pins_the_installed_torch(tmp_path) -> None:
    proc = _run_setup_py("--name", "--version")
    assert proc.returncode == 0 and proc.stdout.split() == ["DiffIR-HDR", _project()["version"]], proc.stderr
    log = tmp_path / "pip.log"
    (tmp_path / "pip").mkdir()
    (tmp_path / "pip" / "__init__.py").write_text("")
    (tmp_path / "pip" / "__main__.py").write_text(f"""import os, sys
lines = [open(p).read() for p in os.environ.get("PIP_CONSTRAINT", "").split()]
open({str(log)!r}, "w").write(" ".join(sys.argv[1:]) + "\\n" + "".join(lines))
""")
    proc = _run_setup_py("develop", fake_pip=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    args, pin = log.read_text().splitlines()
    assert args.startswith("install -e .") and pin == f"torch=={version('torch')}"


def test_setup_py_develop_wants_torch_installed_first(monkeypatch) -> None:
    import runpy
    from importlib.metadata import PackageNotFoundError

    import setuptools

    monkeypatch.setattr(setuptools, "setup", lambda **kw: None)
    installed_torch = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_shim")["installed_torch"]
    assert installed_torch() == version("torch")

    def no_torch(name):
        raise PackageNotFoundError(name)

    monkeypatch.setitem(installed_torch.__globals__, "version", no_torch)
    with pytest.raises(SystemExit, match=r"torch is not installed.*pip install torch==2\.13\.0.*pytorch\.org"):
        installed_torch()
    monkeypatch.setitem(installed_torch.__globals__, "version", lambda name: "2.5.1")
    with pytest.raises(SystemExit, match="torch 2.5.1 is older than 2.6"):
        installed_torch()


def test_torch_has_a_floor_and_no_cap() -> None:
    spec = _requirements()["torch"].specifier
    assert not spec.contains("2.5.1") and spec.contains("2.6.0")  # torch.compiler.set_stance is 2.6+
    assert spec.contains("2.13.0") and spec.contains("99.0")  # the tested version; a newer torch is never downgraded
    assert hasattr(torch.compiler, "set_stance")


def test_openexr_minimum_is_the_first_with_stream_io() -> None:
    """hdr_io writes EXR into a BytesIO and reads headers with header_only; 3.4.17 fails the write (TypeError:
    write() takes a str) and 3.3 the header read, 3.5.0 passes tests/test_hdr_io.py (checked in a venv)."""
    import OpenEXR

    spec = _requirements()["openexr"].specifier
    assert not spec.contains("3.4.17") and spec.contains("3.5.0")
    assert spec.contains(version("OpenEXR")), f"installed OpenEXR {version('OpenEXR')} is outside {spec}"
    rgb = np.arange(24, dtype=np.float32).reshape(2, 4, 3) - 3
    bio = io.BytesIO()
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGB": rgb}).write(bio)
    bio.seek(0)
    channels = OpenEXR.File(bio, separate_channels=True).channels()
    np.testing.assert_array_equal(np.stack([channels[c].pixels for c in "RGB"], -1), rgb)


# ------------------------------------------------------------------ console scripts
def test_console_scripts_point_to_the_shared_functions() -> None:
    scripts = _project()["scripts"]
    assert {name: target.split(":")[1] for name, target in scripts.items()} == SCRIPTS
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(import_module(module), func))
    for script, func in [("train_hdr.py", "train_hdr"), ("train.py", "train_progressive"), ("test.py", "evaluate"),
                         ("inference_hdr.py", "infer"), ("scripts/create_lmdb_hdr.py", "create_lmdb"),
                         ("scripts/check_dataset.py", "check_dataset"),
                         ("scripts/export_safetensors.py", "export")]:
        assert f"from DiffIR.cli_entry import {func}" in (ROOT / script).read_text(encoding="utf-8"), script


@pytest.mark.parametrize("func", sorted(set(SCRIPTS.values())))
def test_console_script_help_exits_0(func: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        getattr(cli_entry, func)(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_console_scripts_run_in_the_current_directory(tmp_path, monkeypatch) -> None:
    """Without ``root`` (the console scripts) experiments/ goes to the current directory; errors exit with 2."""
    import DiffIR.train_pipeline_hdr as hdr

    calls = []

    def fake_pipeline(root, argv):
        calls.append((root, argv))
        raise OptionError("bad option")

    monkeypatch.setattr(hdr, "train_pipeline", fake_pipeline)
    monkeypatch.chdir(tmp_path)
    assert cli_entry.train_hdr(["-opt", "x.yml"]) == 2
    assert cli_entry.train_hdr(["-opt", "x.yml"], root="/repo") == 2
    assert calls == [(str(tmp_path), ["-opt", "x.yml"]), ("/repo", ["-opt", "x.yml"])]


# ------------------------------------------------------------------ Makefile: an installed torch is kept
def _fake_make_install(tmp_path: Path, torch_init: str):
    """``make install`` with a python whose ``torch`` is ``torch_init`` and whose pip only logs its calls."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    (tmp_path / "fake" / "torch").mkdir(parents=True)
    (tmp_path / "fake" / "torch" / "__init__.py").write_text(torch_init)
    log = tmp_path / "pip.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip: $*" >> '{log}'; cat >> '{log}'; exit 0; fi
PYTHONPATH='{tmp_path / "fake"}' exec '{sys.executable}' "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.run(["make", "-C", str(ROOT), "install", f"PYTHON={wrapper}", f"STAMP={tmp_path / 'stamp'}"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return proc, (log.read_text() if log.exists() else "")


@pytest.mark.slow
def test_make_keeps_a_newer_torch(tmp_path) -> None:
    proc, log = _fake_make_install(tmp_path, "__version__ = '2.14.0+cu130'\n"
                                             "from types import SimpleNamespace\n"
                                             "compiler = SimpleNamespace(set_stance=None)\n")
    assert proc.returncode == 0, proc.stderr
    assert log.splitlines() == ["pip: -m pip install -e .[test] -c /dev/stdin", "torch==2.14.0+cu130"]
    assert (tmp_path / "stamp").exists()


@pytest.mark.slow
def test_make_refuses_a_torch_older_than_2_6(tmp_path) -> None:
    proc, log = _fake_make_install(tmp_path, "__version__ = '2.5.1'\nfrom types import SimpleNamespace\n"
                                             "compiler = SimpleNamespace()\n")
    assert proc.returncode != 0
    assert "torch 2.5.1 is older than 2.6" in proc.stderr and "make does not replace an installed torch" in proc.stderr
    assert log == "" and not (tmp_path / "stamp").exists()


@pytest.mark.slow
def test_make_test_installs_the_extras_and_the_demo_none() -> None:
    if not shutil.which("make"):
        pytest.skip("make is not installed")

    def commands(target: str) -> str:
        proc = subprocess.run(["make", "-C", str(ROOT), "-n", "-B", target], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    pinned = "print(\"torch==\" + torch.__version__)' | python3 -m pip install -e "
    assert pinned + '".[test,wandb,onnx]" -c /dev/stdin' in commands("test")
    demo = commands("demo")
    assert pinned + '".[test]" -c /dev/stdin' in demo and "wandb" not in demo and "onnx" not in demo


@pytest.mark.slow
def test_make_installs_the_cpu_torch_when_there_is_none(tmp_path) -> None:
    proc, log = _fake_make_install(tmp_path, "raise ImportError('no torch here')\n")
    assert log.splitlines()[0] == "pip: -m pip install torch==2.13.0"  # the CPU wheel, never an open range
    assert proc.returncode != 0  # the fake pip installed nothing, so the torch check stops make


# ------------------------------------------------------------------ the sdist
@pytest.mark.slow
def test_sdist_contains_the_package_and_installs(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "DiffIR", src / "DiffIR", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path / 'dist')!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sdist = tmp_path / "dist" / proc.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(f"{sdist.name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    sources = {p.relative_to(src).as_posix() for p in (src / "DiffIR").rglob("*.py")}
    assert sources <= names and {"pyproject.toml", "README.md"} <= names
    assert "Requires-Dist: OpenEXR>=3.5" in pkg_info and "Requires-Dist: torch>=2.6" in pkg_info

    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(sdist)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([str(site / "bin" / "diffir-check"), "--help"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "usage: diffir-check" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", "import DiffIR.cli_entry as c; print(c.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.stdout.strip() == str(site / "DiffIR" / "cli_entry.py"), proc.stderr[-2000:]


# ------------------------------------------------------------------ inference defaults outside the repository
def test_builtin_inference_defaults_match_the_official_options_file() -> None:
    from DiffIR.inference_pipeline import OFFICIAL_S2_NETWORK, tone_settings
    from DiffIR.config.loading import load_yaml

    official = load_yaml(str(ROOT / "options" / "test_DiffIRs2_hdr.yml"))
    assert official["network_g"].pop("highlight_gate") == {"threshold": 0.7}  # the shipped recipe's
    assert OFFICIAL_S2_NETWORK == official["network_g"]
    assert tone_settings({}) == tone_settings(official)


def test_diffir_infer_without_options_runs_outside_the_repository(tmp_path, monkeypatch, capsys) -> None:
    """No --opt and no saved options: the built-in official stage-2 network (26.9 M parameters) loads the weights."""
    from DiffIR.archs import build_network
    from DiffIR.data.synthetic_hdr import generate_dataset
    from DiffIR.inference_pipeline import OFFICIAL_S2_NETWORK
    from DiffIR.utils.hdr_io import read_hdr

    torch.manual_seed(0)
    net = build_network(dict(OFFICIAL_S2_NETWORK), "network_g")
    (tmp_path / "w").mkdir()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "w" / "net_g.pth")
    generate_dataset(tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dg", num_images=1, size=16, seed=1)
    monkeypatch.chdir(tmp_path)
    assert cli_entry.infer(["--input", "jpg", "--dgain", "dg", "--model", "w/net_g.pth", "--output", "out"]) == 0
    assert "built-in official stage-2 network options" in capsys.readouterr().out
    img = read_hdr(tmp_path / "out" / "im_000001.hdr")
    assert img.shape == (16, 16, 3) and np.isfinite(img).all()
