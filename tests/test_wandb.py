"""wandb as a log sink: tiny offline runs (no network), resume into the same wandb run, the unreachable-server
fallback, the missing-package error, and the server probe."""
import socket
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import yaml

from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils import wandb_sink
from DiffIR.utils.errors import OptionError

from helpers import log_text, train_options, write_yaml

@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb offline, its folders under tmp_path, and a spy on what each started run receives."""
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install -e .[wandb])")
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CACHE_DIR", "wandb_cache"),
                     ("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_DATA_DIR", "wandb_data"),
                     ("WANDB_ARTIFACT_DIR", "wandb_artifacts")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = []
    real_init = wandb.init

    def spy_init(**kwargs):
        run = real_init(**kwargs)
        seen = SimpleNamespace(id=run.id, kwargs=kwargs, config=dict(run.config), logs=[])
        runs.append(seen)
        real_log = run.log

        def log(data, step=None, **kw):
            seen.logs.append((step, dict(data)))
            return real_log(data, step=step, **kw)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", spy_init)
    wandb.teardown()  # wandb reads its environment once per process: start from this test's
    yield runs
    wandb.teardown()


def _wandb_options(tmp_path, name, total_iter, **wandb_opts):
    yml = train_options(tmp_path, name=name, total_iter=total_iter)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"].update(language="en", use_tb_logger=False, wandb={"project": "diffir-test", **wandb_opts})
    return write_yaml(yml, opt)


def test_offline_run_logs_figures_and_resume_continues_the_same_run(tmp_path, wandb_env):
    yml = _wandb_options(tmp_path, "wb", total_iter=3)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "wb"
    first = wandb_env[0]
    assert (exp / "wandb_id.txt").read_text().strip() == first.id
    assert first.config["name"] == "wb" and first.config["train"]["total_iter"] == 3  # the options as written
    scalars = {k for _, data in first.logs for k in data}
    assert {"losses/l_pix", "train/lr", "metrics/V/psnr", "metrics/V/psnr_input"} <= scalars
    assert {"train/input_output_gt", "val/V/input_output_gt_error"} <= scalars  # the preview images
    assert [s for s, _ in first.logs] == sorted(s for s, _ in first.logs)  # wandb needs steps in order
    assert list((tmp_path / "wandb_dir" / "wandb").glob(f"offline-run-*-{first.id}"))
    assert "wandb sync" in log_text(tmp_path, "wb")

    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=5"])
    second = wandb_env[1]
    assert second.id == first.id and second.kwargs["resume"] == "allow"
    assert min(s for s, _ in second.logs) == 4 and second.config["train"]["total_iter"] == 5
    assert len(list((tmp_path / "wandb_dir" / "wandb").glob(f"offline-run-*-{first.id}"))) == 2


def test_resume_id_names_the_run_and_a_fresh_start_gets_a_new_one(tmp_path, wandb_env):
    yml = _wandb_options(tmp_path, "wbid", total_iter=1, resume_id="abc12345")
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "val:val_freq=~", "val:metrics=~"])
    assert wandb_env[0].id == "abc12345"
    yml = _wandb_options(tmp_path, "wbid", total_iter=1)
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "val:val_freq=~", "val:metrics=~"])
    # not a resume: the earlier folder (with its id) was archived, so this is a new wandb run
    assert wandb_env[1].id != "abc12345"
    assert (tmp_path / "experiments" / "wbid" / "wandb_id.txt").read_text().strip() == wandb_env[1].id


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_online_without_a_server_falls_back_to_offline_at_once(tmp_path, wandb_env, monkeypatch, records):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")  # nothing listens: refused
    yml = _wandb_options(tmp_path, "wbnet", total_iter=1)
    start = time.time()
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "val:val_freq=~", "val:metrics=~"])
    assert time.time() - start < 20  # wandb's own online start would wait ~45 s, then fail
    assert wandb_env[0].kwargs["mode"] == "offline"
    notice = [r.getMessage() for r in records if "wandb runs offline" in r.getMessage()]
    assert notice and "could not be reached" in notice[0] and "wandb sync " in notice[0]


def test_probe_is_bounded_and_sees_a_listening_server(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert wandb_sink.server_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not wandb_sink.server_reachable(f"http://127.0.0.1:{_closed_port()}")
    assert not wandb_sink.server_reachable("not a url")

    release = threading.Event()

    def hang(*args, **kwargs):  # a resolver that does not answer
        release.wait(30)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.time()
    assert not wandb_sink.server_reachable("https://api.wandb.ai", timeout=0.5)
    assert time.time() - start < 2
    release.set()


def test_failed_online_start_is_retried_offline_and_a_failed_offline_start_costs_nothing(records):
    import logging

    logger = logging.getLogger("DiffIR")
    calls = []

    def init(mode=None, **kwargs):
        calls.append(mode)
        if mode != "offline":
            raise RuntimeError("no api key configured")
        return "run"

    fake = SimpleNamespace(init=init)
    assert wandb_sink._init(fake, {}, None, logger) == ("run", "wandb's online start failed (RuntimeError: no api "
                                                        "key configured)")
    assert calls == [None, "offline"]
    fake.init = lambda mode=None, **kw: (_ for _ in ()).throw(OSError("disk full"))
    assert wandb_sink._init(fake, {}, "offline", logger) == (None, "")
    assert any("training continues without wandb" in r.getMessage() for r in records)


def test_missing_wandb_stops_before_the_experiment_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    yml = _wandb_options(tmp_path, "nowb", total_iter=1)
    with pytest.raises(OptionError, match=r"pip install -e \.\[wandb\]"):
        train_pipeline(str(tmp_path), ["-opt", str(yml)])
    assert not (tmp_path / "experiments").exists()


def test_wandb_keys_are_checked(tmp_path):
    yml = _wandb_options(tmp_path, "badwb", total_iter=1, projct="x")
    with pytest.raises(OptionError, match="logger:wandb:projct.*did you mean 'project'"):
        train_pipeline(str(tmp_path), ["-opt", str(yml)])
    yml = _wandb_options(tmp_path, "badwb", total_iter=1, entity=["a"])
    with pytest.raises(OptionError, match="'logger:wandb:entity' is"):
        train_pipeline(str(tmp_path), ["-opt", str(yml)])
