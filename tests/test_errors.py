"""One root for the project's errors (issue 20): the entry scripts turn a DiffIRError or a file-system error into one
line and an exit status, and let every other exception (a bug) through with its traceback."""
import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest
import torch

import DiffIR
import DiffIR.train_pipeline_hdr as hdr
from DiffIR import cli_entry
from DiffIR.archs.ddpm import linear_beta_schedule
from DiffIR.archs.dgain_embed import DgainEmbedding
from DiffIR.archs.dirformer import LayerNorm
from DiffIR.archs.highlight_gate import build_highlight_gate
from DiffIR.data.dgain import parse_dgain_text
from DiffIR.utils.checkpoint import CheckpointKeyError, extract_state_dict
from DiffIR.utils.cli import run_cli
from DiffIR.utils.errors import DataError, DiffIRError, MissingInputError, OptionError, TrainingStopped
from DiffIR.utils.misc import decode_utf8

from helpers import entry_env

#: a project error not under the root: a yaml.YAMLError that never leaves the option loader (it becomes an OptionError)
PENDING = {"DuplicateKeyError"}


def _project_errors():
    """Every exception class defined in the DiffIR package, by name (each module imported once)."""
    found = {}
    for info in pkgutil.walk_packages(DiffIR.__path__, "DiffIR."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("DiffIR."):
                found[obj.__name__] = obj
    return found


def test_every_project_error_derives_from_the_root_and_keeps_its_builtin_base():
    errors = _project_errors()
    assert {"OptionError", "DataError", "CheckpointError", "DatasetCheckError", "LmdbBuildError"} <= set(errors)
    outside = sorted(name for name, cls in errors.items() if not issubclass(cls, DiffIRError) and name not in PENDING)
    assert not outside, f"{outside} do not derive from DiffIRError"
    # what `except ValueError` / `except OSError` / `except KeyError` code caught before still catches them
    builtin = {"OptionError": ValueError, "DataError": ValueError, "PairingError": ValueError,
               "DatasetCheckError": ValueError, "UnpairedSetError": ValueError, "LmdbBuildError": ValueError,
               "LossValueError": ValueError, "CheckpointError": (ValueError, RuntimeError),
               "CheckpointKeyError": KeyError, "UnknownNameError": KeyError, "MissingInputError": RuntimeError,
               "TrainingStopped": RuntimeError, "DiskFullError": OSError, "RunInUse": OSError, "ImagesFailed": OSError,
               "ImageIOError": OSError}
    for name, base in builtin.items():
        assert issubclass(errors[name], base), name


_CKPT = {"optimizer_x": 1}


@pytest.mark.parametrize("raise_it, kind, words", [
    (lambda: parse_dgain_text("dgain: abc\ngamma: 2\n", source="a.txt"), DataError, "a.txt', line 1"),
    (lambda: decode_utf8(b"\xff\xfeu\x00", "dgain file 'a.txt'", "save it as UTF-8"), DataError, "UTF-16"),
    (lambda: build_highlight_gate({"threshold": 2}, "DiffIRS1"), OptionError, "threshold must be in [0, 1)"),
    (lambda: LayerNorm(8, "WithBais"), OptionError, "LayerNorm_type must be"),
    (lambda: linear_beta_schedule(4, 0.5, 0.1), OptionError, "linear_start <= linear_end"),
    (lambda: DgainEmbedding(8, owner="DiffIRS2").forward(None, torch.zeros(1, 8)), MissingInputError, "dgain_cond"),
    (lambda: extract_state_dict(_CKPT, "params_ema", "w.pth"), CheckpointKeyError, "has no 'params_ema' entry"),
])
def test_user_mistakes_end_the_program_in_one_line(capsys, raise_it, kind, words):
    with pytest.raises(kind) as info:
        raise_it()
    assert run_cli(raise_it) == 2
    err = capsys.readouterr().err
    assert f"ERROR: {info.value}\n" in err and words in err and "Traceback" not in err
    assert not str(info.value).startswith(("'", '"'))  # a KeyError's message is not quoted


@pytest.mark.parametrize("bug", [ValueError("too many values to unpack"), KeyError("lq"), RuntimeError("shape"),
                                 TypeError("unsupported operand")])
def test_a_bug_is_not_reported_as_a_configuration_error(monkeypatch, capsys, bug):
    def pipeline(root, argv):
        raise bug

    monkeypatch.setattr(hdr, "train_pipeline", pipeline)
    with pytest.raises(type(bug)) as info:
        cli_entry.train_hdr(["-opt", "x.yml"], root="/repo")
    assert info.value is bug and "ERROR:" not in capsys.readouterr().err


@pytest.mark.parametrize("error, code", [(OptionError("'train:total_iter' is -1. Fix: use a number >= 1."), 2),
                                         (FileNotFoundError("Option file not found: x.yml"), 2),
                                         (TrainingStopped("the loss is not finite"), 3)])
def test_project_and_file_errors_give_one_line_and_their_exit_status(monkeypatch, capsys, error, code):
    def pipeline(root, argv):
        raise error

    monkeypatch.setattr(hdr, "train_pipeline", pipeline)
    assert cli_entry.train_hdr(["-opt", "x.yml"], root="/repo") == code
    err = capsys.readouterr().err
    assert err == f"\nERROR: {error}\n(set DIFFIR_TRACEBACK=1 for the full traceback)\n"


_BUG_IN_A_COMMAND = """if True:
    import sys
    from DiffIR.utils.cli import run_cli
    from DiffIR.utils.errors import OptionError

    def bug():
        {}[0]  # a KeyError from the program, not from the user
    def mistake():
        raise OptionError("'train:total_iter' is -1")
    sys.exit(run_cli(bug if sys.argv[1] == "bug" else mistake))
"""


@pytest.mark.slow
def test_the_exit_status_of_a_bug_and_of_a_mistake():
    run = [sys.executable, "-c", _BUG_IN_A_COMMAND]
    bug = subprocess.run(run + ["bug"], capture_output=True, text=True, env=entry_env(), timeout=120)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 0" in bug.stderr
    assert "ERROR:" not in bug.stderr
    mistake = subprocess.run(run + ["mistake"], capture_output=True, text=True, env=entry_env(), timeout=120)
    assert mistake.returncode == 2 and "Traceback" not in mistake.stderr
    assert mistake.stderr.strip().splitlines()[0] == "ERROR: 'train:total_iter' is -1"
