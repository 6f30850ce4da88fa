"""The life of a run: one run per experiment name (lock), Ctrl-C saves, a bad file or a full disk mid-run saves or
keeps a checkpoint and ends with one message, and DataLoader worker errors read as the project's message."""
import errno
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

import DiffIR.utils.misc as misc
from DiffIR.models.diffir_s1_model import DiffIRS1Model
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import atomic_save, list_training_states, load_file
from DiffIR.utils.cli import run_cli
from DiffIR.utils.errors import DiskFullError, PreemptionFlag, RunInUse, worker_error_message
from DiffIR.utils.image_common import ImageIOError
from DiffIR.utils.runlock import RunLock

from conftest import ROOT
from helpers import (cli_run_options, entry_env, log_text, start_entry, the_one_saved_iteration,
                     wait_for_first_iteration, write_yaml)


def _yml(tmp_path, name, total_iter, workers=0, **logger):
    yml, _ = cli_run_options(tmp_path, name, total_iter, **logger)
    opt = yaml.safe_load(yml.read_text())
    opt["datasets"]["train"]["num_worker_per_gpu"] = workers
    return write_yaml(yml, opt)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------- experiment lock
def test_second_run_with_the_same_name_refuses_before_archiving(tmp_path, capsys):
    exp = tmp_path / "experiments" / "busy"
    exp.mkdir(parents=True)
    (exp / "mine.txt").write_text("a running run's file")
    yml = _yml(tmp_path, "busy", 1)
    holder = RunLock(str(exp))  # another open file description: conflicts like another process would
    assert holder.acquire() is None
    try:
        rc = run_cli(lambda: train_pipeline(str(tmp_path), ["-opt", str(yml)]))
        err = capsys.readouterr().err
        assert rc == 2, err
        assert re.search(rf"experiment busy is in use by pid {os.getpid()} on host {re.escape(socket.gethostname())} "
                         r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; wait for it, or use another name", err), err
        assert "Traceback" not in err
        assert (exp / "mine.txt").read_text() == "a running run's file"  # nothing archived or written
        assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == ["busy", "busy.lock"]
        with pytest.raises(RunInUse, match="results busy is in use"):  # the same lock class guards results/NAME
            RunLock(str(tmp_path / "experiments" / "busy"), "results").acquire()
    finally:
        holder.release()
    assert not (tmp_path / "experiments" / "busy.lock").exists()


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over_and_released_on_error(tmp_path):
    lock = tmp_path / "experiments" / "stale.lock"
    lock.parent.mkdir(parents=True)
    pid = _dead_pid()
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "2020-01-01 00:00:00"}))
    yml = _yml(tmp_path, "stale", 1)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    log = log_text(tmp_path, "stale")
    assert f"Took over the lock of experiment stale ({lock}) left by pid {pid} on host" in log
    assert not lock.exists()  # released at the end
    # an error after the lock was taken releases it too
    with pytest.raises(Exception, match="batch_size_per_gpu"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "datasets:train:batch_size_per_gpu=99"])
    assert not lock.exists()


@pytest.mark.slow
def test_lock_holder_killed_by_the_kernel_frees_the_lock(tmp_path):
    """flock dies with its process (kill -9 included); the next run takes the left file over."""
    folder = tmp_path / "experiments" / "k9"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from DiffIR.utils.runlock import RunLock; "
            f"RunLock({str(folder)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=f"experiment k9 is in use by pid {proc.pid} on host"):
            RunLock(str(folder)).acquire()
    finally:
        proc.kill()
        proc.wait()
    lock = RunLock(str(folder))
    assert f"left by pid {proc.pid} on host" in lock.acquire()
    lock.release()
    assert not os.path.exists(lock.path)


# ------------------------------------------------------------------------------------------- Ctrl-C
def test_preemption_flag_first_ctrl_c_sets_the_flag_second_aborts():
    with PreemptionFlag("notice") as flag:
        signal.raise_signal(signal.SIGINT)  # the handler has run when raise_signal returns: nothing to wait for
        assert flag.is_set() and flag.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with PreemptionFlag() as flag:
        signal.raise_signal(signal.SIGTERM)
        assert flag.is_set() and flag.exit_code == 143


def test_hangup_stops_like_sigterm_unless_nohup_ignores_it():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before starting the run
    try:
        with PreemptionFlag() as flag:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)
            assert not flag.is_set()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with PreemptionFlag() as flag:
            signal.raise_signal(signal.SIGHUP)
            assert flag.is_set() and flag.exit_code == 129 and flag.signal_name == "SIGHUP"
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


# A run that signals its own process group (its DataLoader worker included) when iteration AT is complete, so
# that the moment a scheduler's pre-emption of the whole job hits is deterministic. "step": right after the step
# (the main process is busy). "fetch": as the main process starts waiting for the next batch, which the worker
# (forked for the epoch of iteration AT) never produces, so the main process is surely waiting on a dead worker.
_SIGNAL_OWN_GROUP = """if True:
    import glob, os, signal, sys, time
    import DiffIR.train_loop as loop
    from DiffIR.cli_entry import train_hdr
    from DiffIR.data.ldr_hdr_paired_dataset import LDR_HDR_PairedDataset
    from DiffIR.models.diffir_s1_model import DiffIRS1Model

    SIG, AT, MODE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    done, calls = [0], [0]
    optimize, accumulate, get_item = (DiffIRS1Model.optimize_parameters, loop.step_batches,
                                      LDR_HDR_PairedDataset.__getitem__)

    def ended(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    def signal_group():
        workers = [p for f in glob.glob("/proc/self/task/*/children") for p in open(f).read().split()]
        assert workers, "no DataLoader worker"
        os.killpg(0, SIG)
        deadline = time.time() + 60
        while SIG != signal.SIGHUP and not all(ended(p) for p in workers) and time.time() < deadline:
            time.sleep(0.01)  # until the workers are dead (they ignore SIGHUP)

    def step(self, current_iter):
        optimize(self, current_iter)
        done[0] = current_iter
        if MODE == "step" and current_iter == AT:
            signal_group()

    def batches(loader, n):
        it = accumulate(loader, n)
        while True:
            if MODE == "fetch" and done[0] == AT:
                signal_group()
            try:
                batch = next(it)
            except StopIteration:
                return
            yield batch

    def item(self, index):  # in the worker of iteration AT's epoch: the batch after AT's never comes
        calls[0] += 1
        if MODE == "fetch" and done[0] == AT - 1 and calls[0] > 2:
            time.sleep(600)
        return get_item(self, index)

    DiffIRS1Model.optimize_parameters, loop.step_batches, LDR_HDR_PairedDataset.__getitem__ = step, batches, item
    sys.exit(train_hdr(sys.argv[4:], os.getcwd()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig, mode, code", [(signal.SIGTERM, "fetch", 143), (signal.SIGHUP, "step", 129)])
def test_signal_to_the_process_group_with_workers_saves_the_last_iteration(tmp_path, sig, mode, code):
    # 4 images, batch 2: iteration 3 starts an epoch (a new worker); SIGHUP: the workers ignore it (as Ctrl-C)
    yml = _yml(tmp_path, "group", 100, workers=1, save_checkpoint_freq=10000, print_freq=1)
    exp = tmp_path / "experiments" / "group"
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_OWN_GROUP, str(int(sig)), "3", mode, "-opt", str(yml)],
                          capture_output=True, text=True, cwd=tmp_path, env=entry_env(), timeout=300,
                          start_new_session=True)
    err = proc.stderr
    assert proc.returncode == code, err
    assert the_one_saved_iteration(exp) == 3
    assert f"收到 {sig.name}: 已在第 3 次迭代保存训练状态并停止. 用 --auto_resume 继续." in err
    assert "Traceback" not in err and "DataLoader worker (pid" not in err and "exited unexpectedly" not in err
    note = "DataLoader 工作进程也收到了同一信号并已结束"
    assert (note in err and note in log_text(tmp_path, "group")) == (sig == signal.SIGTERM), err
    assert not (tmp_path / "experiments" / "group.lock").exists()


@pytest.mark.parametrize("error", [RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. "),
                                   ConnectionResetError(104, "Connection reset by peer")])
def test_worker_killed_while_a_stop_is_pending_ends_the_run_as_the_signal(tmp_path, records, error):
    """The group's signal hit while the main process waited for a batch: torch reports the dead worker, or the
    transfer of a batch from it fails."""
    from types import SimpleNamespace

    from DiffIR.config.context import RunPaths
    from DiffIR.train_loop import _batches_or_stop
    from DiffIR.utils.errors import Preempted
    from DiffIR.utils.logger import Messages, get_root_logger

    def batches():
        yield {"lq": 1}
        raise error

    run = SimpleNamespace(current_iter=0, path=RunPaths(training_states=str(tmp_path)), msg=Messages("en"),
                          logger=get_root_logger(), train_loader=SimpleNamespace(num_workers=1))
    with PreemptionFlag() as flag:
        stream = _batches_or_stop(run, batches(), flag)
        assert next(stream) == {"lq": 1}
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Preempted, match="SIGTERM received: training state saved at iter 0") as info:
            next(stream)
    assert info.value.exit_code == 143
    assert any("ended by the same signal" in r.getMessage() for r in records)
    with PreemptionFlag() as flag:  # without a stop request the worker's death is an error as before
        with pytest.raises((RuntimeError, OSError, ValueError)) as info:  # as before: torch's error, DataError
            list(_batches_or_stop(run, batches(), flag))
        assert not isinstance(info.value, Preempted)


@pytest.mark.slow
def test_ctrl_c_saves_state_exits_130_and_resumes(tmp_path):
    # one worker: Ctrl-C reaches the workers too (the whole process group)
    yml = _yml(tmp_path, "ctrlc", 10000, workers=1, save_checkpoint_freq=10000, print_freq=1)
    exp = tmp_path / "experiments" / "ctrlc"
    proc = start_entry(tmp_path, "train_hdr.py", "-opt", str(yml), start_new_session=True)
    wait_for_first_iteration(exp, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    it = the_one_saved_iteration(exp)
    assert f"收到 Ctrl-C (SIGINT): 已在第 {it} 次迭代保存训练状态和网络" in err and "--auto_resume" in err
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert not (exp.parent / f"{exp.name}.lock").exists()
    assert "训练图像数量: 4" in err and "世界大小(GPU数量): 1" in err  # the summary on the console (launcher none)
    proc = start_entry(tmp_path, "train_hdr.py", "-opt", str(yml), "--auto_resume", "--force_yml",
                       f"train:total_iter={it + 1}")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert f"恢复: 第 {it} 次迭代" in err and (exp / "models" / "net_g_latest.pth").is_file()


# ------------------------------------------------------------------------------------------- bad data mid-run
class _Bad(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ImageIOError(f"Cannot decode LQ image '/data/im_{i}.jpg': not a JPEG.\nFix: re-export it.")


def test_worker_error_reads_as_the_datasets_message():
    with pytest.raises(ImageIOError) as info:
        next(iter(DataLoader(_Bad(), num_workers=1)))
    assert str(info.value).startswith("Caught ImageIOError in DataLoader worker process 0")
    assert worker_error_message(info.value) == "Cannot decode LQ image '/data/im_0.jpg': not a JPEG.\nFix: re-export it."
    assert worker_error_message(ValueError("plain")) == "plain"


def test_corrupt_file_mid_training_saves_state_then_stops(tmp_path, monkeypatch, capsys):
    yml = _yml(tmp_path, "corrupt", 6, workers=1, save_checkpoint_freq=1000)
    opt = yaml.safe_load(yml.read_text())
    lq_dir = opt["datasets"]["train"]["dataroot_lq"]
    orig = DiffIRS1Model.optimize_parameters

    def step(self, current_iter):
        orig(self, current_iter)
        if current_iter == 2:  # after the dataset check passed: the files are replaced by garbage
            for path in glob.glob(os.path.join(lq_dir, "*")):
                with open(path, "wb") as f:
                    f.write(b"garbage, not a JPEG")

    monkeypatch.setattr(DiffIRS1Model, "optimize_parameters", step)
    rc = run_cli(lambda: train_pipeline(str(tmp_path), ["-opt", str(yml)]))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(re.escape(lq_dir) + r"/\S+\.jpg", err), err  # the project's message naming the file
    assert "DataLoader worker" not in err and "Traceback" not in err and "Caught" not in err
    exp = tmp_path / "experiments" / "corrupt"
    assert "training state of iteration 2 is saved" in err and "--auto_resume" in err
    assert [it for it, _ in list_training_states(str(exp / "training_states"))] == [2]
    assert load_file(str(exp / "training_states" / "2.state"))["iter"] == 2
    assert (exp / "models" / "net_g_2.pth").is_file()
    assert not (tmp_path / "experiments" / "corrupt.lock").exists()


# ------------------------------------------------------------------------------------------- disk full
def _full_disk_for(monkeypatch, marker):
    """atomic_open's temporary file for names containing ``marker`` is /dev/full: the kernel's real ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, tmp = real(*args, **kwargs)
        if marker in os.path.basename(tmp):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(misc.tempfile, "mkstemp", mkstemp)


def test_disk_full_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"w": torch.ones(3)}, str(path))
    _full_disk_for(monkeypatch, "ckpt.pth")
    with pytest.raises(DiskFullError, match=rf"disk full while writing {re.escape(str(path))} \(\d+ MB free there "
                                            rf"now\); free space in {re.escape(str(tmp_path))} and run again \(the "
                                            r"previous .*ckpt.pth is intact\)") as info:
        atomic_save({"w": torch.zeros(100000)}, str(path))
    assert info.value.errno == errno.ENOSPC
    assert torch.equal(load_file(str(path))["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pth"]  # no temporary file left
    with pytest.raises(DiskFullError, match="no partial file was left"):
        misc.atomic_write_bytes(str(tmp_path / "new_ckpt.pth"), b"x" * 100000)


def _write_fails_for(monkeypatch, marker, code):
    """torch.save into atomic_open's temporary file for names containing ``marker`` fails after 1000 bytes with
    OSError(code), as the kernel's write does at a quota (EDQUOT) or file size limit (EFBIG): torch then raises its
    own "unexpected pos" RuntimeError, with the OSError only in the exception's context."""
    real = torch.save

    class Limited:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(code, os.strerror(code))
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    def save(obj, f, *args, **kwargs):
        if hasattr(f, "fileno") and marker in os.readlink(f"/proc/self/fd/{f.fileno()}"):
            f = Limited(f)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_quota_exceeded_names_the_quota_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"w": torch.ones(3)}, str(path))
    _write_fails_for(monkeypatch, "ckpt.pth", errno.EDQUOT)
    with pytest.raises(DiskFullError, match=rf"disk quota exceeded while writing {re.escape(str(path))} .*quota "
                                            rf"there is used up\); free space within your quota in "
                                            rf"{re.escape(str(tmp_path))} .*the previous .*ckpt.pth is intact") as info:
        atomic_save({"w": torch.zeros(100000)}, str(path))
    assert info.value.errno == errno.EDQUOT and os.listdir(tmp_path) == ["ckpt.pth"]
    assert torch.equal(load_file(str(path))["w"], torch.ones(3))


@pytest.mark.slow
def test_real_file_size_limit_names_the_limit_and_keeps_the_previous_file(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) with SIGXFSZ ignored: the kernel's write fails with EFBIG past 100000 bytes."""
    path = tmp_path / "ckpt.pth"
    code = f"""if True:
        import resource, signal, torch
        from DiffIR.utils.checkpoint import atomic_save
        from DiffIR.utils.errors import DiskFullError
        atomic_save({{"w": torch.ones(3)}}, {str(path)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100000, resource.RLIM_INFINITY))
        try:
            atomic_save({{"w": torch.zeros(100000)}}, {str(path)!r})
        except DiskFullError as e:
            print(e.errno, e)
        """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=entry_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{errno.EFBIG} file size limit reached while writing {path}: this process may "
                                  "write files of at most 100000 bytes (ulimit -f 97). Raise the limit"), proc.stdout
    assert f"the previous {path} is intact" in proc.stdout and "unexpected pos" not in proc.stdout + proc.stderr
    assert torch.equal(load_file(str(path))["w"], torch.ones(3)) and os.listdir(tmp_path) == ["ckpt.pth"]


@pytest.mark.parametrize("kind", ["ENOSPC", "EFBIG"])
def test_disk_full_while_saving_a_checkpoint_ends_the_run_cleanly(tmp_path, monkeypatch, capsys, kind):
    yml = _yml(tmp_path, "full", 6, save_checkpoint_freq=3)
    if kind == "ENOSPC":
        _full_disk_for(monkeypatch, "net_g_6.pth")
    else:
        _write_fails_for(monkeypatch, "net_g_6.pth", errno.EFBIG)
    rc = run_cli(lambda: train_pipeline(str(tmp_path), ["-opt", str(yml)]))
    err = capsys.readouterr().err
    exp = tmp_path / "experiments" / "full"
    assert rc == 2, err
    if kind == "ENOSPC":
        assert f"disk full while writing {exp / 'models' / 'net_g_6.pth'}" in err
        assert f"free space in {exp / 'models'}" in err
    else:
        assert f"file size limit reached while writing {exp / 'models' / 'net_g_6.pth'}: " in err
        assert "ulimit -f" in err and "unexpected pos" not in err
    assert f"the previous checkpoint {exp / 'training_states' / '3.state'}" in err and "is intact" in err
    assert "--auto_resume" in err and "Traceback" not in err
    assert load_file(str(exp / "training_states" / "3.state"))["iter"] == 3
    assert not glob.glob(str(exp / "**" / ".tmp_*"), recursive=True)
    assert not (tmp_path / "experiments" / "full.lock").exists()


def test_test_py_refuses_a_results_folder_in_use(tmp_path):
    from DiffIR.test_pipeline import test_pipeline
    from test_evaluation import _test_yml, _weights

    yml = _test_yml(tmp_path, _weights(tmp_path), name="busy_test")
    results = tmp_path / "results" / "busy_test"
    results.mkdir(parents=True)
    holder = RunLock(str(results), "results")
    holder.acquire()
    try:
        with pytest.raises(RunInUse, match="results busy_test is in use by pid"):
            test_pipeline(str(tmp_path), ["-opt", yml])
        assert sorted(p.name for p in results.parent.iterdir()) == ["busy_test", "busy_test.lock"]  # not archived
    finally:
        holder.release()


def test_archives_made_in_the_same_second_get_distinct_names(tmp_path):
    target = tmp_path / "exp"
    for i in range(3):
        target.mkdir(exist_ok=True)
        (target / f"run{i}.txt").write_text(str(i))
        misc.mkdir_and_rename(str(target))
    archived = sorted(p for p in tmp_path.iterdir() if p.name != "exp")
    assert len(archived) == 3 and sorted(f.name for p in archived for f in p.iterdir()) == ["run0.txt", "run1.txt",
                                                                                           "run2.txt"]
