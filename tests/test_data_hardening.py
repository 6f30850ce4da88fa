"""Faults and bad input in the data layer (issue 13): nothing lost, nothing cryptic.

One test per class: synthetic regeneration never deletes files it did not write; a truncated LMDB is
refused with a message (no SIGBUS); LMDBs of different builds are refused; a full disk while building
an LMDB says so and the build resumes; check_dataset.py lists every problem in one run (exit 1); a
lossy half-float EXR with negative values is checked, counted and clamped.
"""
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import lmdb
import numpy as np
import OpenEXR
import pytest

from DiffIR.data import build_dataset
from DiffIR.data import lmdb_format, lmdb_reader, lmdb_writer
from DiffIR.data.check_report import DatasetCheckError
from DiffIR.data.dgain import format_dgain_text
from DiffIR.data.generated_folder import MARKER_NAME
from DiffIR.data.lmdb_format import STATE_KEY
from DiffIR.data.lmdb_writer import LmdbBuildError
from DiffIR.data.pairing import PairingError
from DiffIR.data.synthetic_deblur import ensure_synthetic_deblur_dataset
from DiffIR.data.synthetic_hdr import ensure_synthetic_dataset
from DiffIR.utils.hdr_io import read_hdr, write_hdr, write_ldr
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import hdr_to_ldr

from conftest import ROOT
from helpers import build_lmdb, import_scripts, make_hdr_folder, short_run_options, write_yaml

H, W = 24, 32


def _make(root, **kw):
    """24x32 pairs (.exr targets, .jpg inputs), all of dgain 2."""
    return make_hdr_folder(root, **{"size": (H, W), "dgain_of": lambda i: 2.0, **kw})


def _opt(root, phase="val", **kw):
    opt = {"name": "T", "type": "LDR_HDR_PairedDataset", "phase": phase, "dataroot_lq": str(root / "lq"),
           "dataroot_gt": str(root / "gt"), "dataroot_dgain": str(root / "dg")}
    opt.update(kw)
    return opt


def _lmdb_opt(out, phase="val", **kw):
    return {"name": "T", "type": "LDR_HDR_PairedDataset", "phase": phase, "io_backend": {"type": "lmdb"},
            "dataroot_lq": str(out / "lq.lmdb"), "dataroot_gt": str(out / "gt.lmdb"),
            "dataroot_dgain": str(out / "dgain.lmdb"), **kw}


def _yml(tmp_path, datasets, name="opt"):
    return write_yaml(tmp_path / f"{name}.yml", short_run_options("hardening", datasets))


# ------------------------------------------------------------------ 1. synthetic data: never delete user files
def test_synthetic_regeneration_replaces_only_its_own_files(tmp_path):
    dirs = [tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dg"]
    assert ensure_synthetic_dataset(*dirs, num_images=3, size=16, seed=0, log=None)
    marker = json.loads((dirs[0] / MARKER_NAME).read_text())
    assert marker["files"] == {f"im_00000{i}.jpg": os.path.getsize(dirs[0] / f"im_00000{i}.jpg") for i in (1, 2, 3)}
    (dirs[0] / "mine.jpg").write_bytes(b"user data")  # a user adds a file to a generated folder
    (dirs[0] / "notes").mkdir()
    (dirs[1] / ".keep").write_text("hidden")
    # changed options: refused, naming the files and the fix; nothing deleted, the old set intact
    with pytest.raises(FileExistsError) as ei:
        ensure_synthetic_dataset(*dirs, num_images=2, size=16, seed=1, log=None)
    msg = str(ei.value)
    assert f"dataroot_lq={dirs[0]}: mine.jpg, notes/" in msg and "move those files elsewhere" in msg
    assert "choose other dataroots" in msg and "dataroot_gt" not in msg
    assert (dirs[0] / "mine.jpg").read_bytes() == b"user data" and (dirs[0] / "notes").is_dir()
    assert json.loads((dirs[0] / MARKER_NAME).read_text()) == marker and len(os.listdir(dirs[1])) == 5
    # moved away: regenerated in place; the generator's stale file goes, the hidden one stays
    os.rename(dirs[0] / "mine.jpg", tmp_path / "mine.jpg")
    os.rmdir(dirs[0] / "notes")
    assert ensure_synthetic_dataset(*dirs, num_images=2, size=16, seed=1, log=None)
    assert sorted(os.listdir(dirs[1])) == [".keep", MARKER_NAME, "im_000001.hdr", "im_000002.hdr"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not ensure_synthetic_dataset(*dirs, num_images=2, size=16, seed=1, log=None)
    assert len(build_dataset(_opt(tmp_path, dataroot_lq=str(dirs[0]), dataroot_gt=str(dirs[1]),
                                  dataroot_dgain=str(dirs[2])))) == 2
    # a generated file the user changed is not the generator's any more
    with open(dirs[1] / "im_000001.hdr", "ab") as f:
        f.write(b"\0")
    with pytest.raises(FileExistsError, match=r"im_000001\.hdr \(changed since it was generated\)"):
        ensure_synthetic_dataset(*dirs, num_images=3, size=16, seed=1, log=None)
    assert os.path.exists(dirs[1] / "im_000001.hdr")
    # a marker of an older version (no file list) stands for the names its configuration produces
    write_hdr(dirs[1] / "im_000001.hdr", np.ones((16, 16, 3), np.float32))
    for d in dirs:
        m = json.loads((d / MARKER_NAME).read_text())
        del m["files"]
        (d / MARKER_NAME).write_text(json.dumps(m))
    (dirs[2] / "extra.txt").write_text("dgain: 1\n")
    with pytest.raises(FileExistsError, match=r"dataroot_dgain=.*: extra\.txt"):
        ensure_synthetic_dataset(*dirs, num_images=3, size=16, seed=2, log=None)
    os.remove(dirs[2] / "extra.txt")
    assert ensure_synthetic_dataset(*dirs, num_images=3, size=16, seed=2, log=None)
    assert "files" in json.loads((dirs[2] / MARKER_NAME).read_text())
    # the deblur generator shares the logic
    gt, lq = tmp_path / "sharp", tmp_path / "blur"
    assert ensure_synthetic_deblur_dataset(gt, lq, 1, 16, 0, max_blur=3, log=None)
    (lq / "photo.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"dataroot_lq=.*blur: photo\.png"):
        ensure_synthetic_deblur_dataset(gt, lq, 1, 16, 1, max_blur=3, log=None)
    assert (lq / "photo.png").read_bytes() == b"mine"


# ------------------------------------------------------------------ 2. truncated LMDB: a message, not SIGBUS
@pytest.mark.slow
def test_truncated_lmdb_is_refused_with_a_message_not_a_crash(tmp_path):
    root = _make(tmp_path / "d")
    out = tmp_path / "lmdb"
    build_lmdb(root, out)
    data = out / "gt.lmdb" / "data.mdb"
    full = os.path.getsize(data)
    os.truncate(data, full // 2)  # a partly copied set
    yml = _yml(tmp_path, {"val": _lmdb_opt(out)})
    # in a child process: a SIGBUS regression fails this test instead of killing pytest
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'scripts')!r}]
        from DiffIR.data.lmdb_reader import LmdbPairReader
        from DiffIR.data.pair_reader import PairSource
        import check_dataset, create_lmdb_hdr
        out = {str(out)!r}
        try:
            LmdbPairReader(PairSource(out + "/lq.lmdb", out + "/gt.lmdb", out + "/dgain.lmdb"))
        except OSError as e:
            print("READER:", e)
        print("CHECK rc", check_dataset.main(["-opt", {str(yml)!r}]))
        print("CREATE rc", create_lmdb_hdr.main(["--lq", {str(root / 'lq')!r}, "--gt", {str(root / 'gt')!r},
                                                "--dgain", {str(root / 'dg')!r}, "--out", out, "--no-progress"]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFIR_CACHE_DIR": str(tmp_path / "cc")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"rc {proc.returncode} (135/-7: SIGBUS)\n{proc.stdout}\n{proc.stderr[-2000:]}"
    expected = f"'{data}' is truncated: {full // 2} bytes, the LMDB needs {full}. Fix: copy it again, or rebuild it"
    assert f"READER: {expected}" in proc.stdout
    assert "CHECK rc 1" in proc.stdout and proc.stdout.count(expected) == 2  # the reader's and check_dataset's
    assert "CREATE rc 2" in proc.stdout and expected in proc.stderr  # a resume over it is refused too


# ------------------------------------------------------------------ 3. LMDBs of different builds
def test_lmdbs_of_different_builds_are_refused(tmp_path):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    build_lmdb(_make(tmp_path / "d1", seed=1), out1)
    build_lmdb(_make(tmp_path / "d2", seed=2), out2)  # same stems, other images
    assert len(build_dataset(_lmdb_opt(out1))) == 3
    states = {k: lmdb_format.read_state(lmdb_reader.reader_env(str(out1 / f"{k}.lmdb"))) for k in ("lq", "gt", "dgain")}
    assert len({s["build_id"] for s in states.values()}) == 1 and len(states["gt"]["build_id"]) == 32
    mixed = _lmdb_opt(out1, dataroot_gt=str(out2 / "gt.lmdb"))
    with pytest.raises(OptionError) as ei:
        build_dataset(mixed)
    msg = str(ei.value)
    assert "different builds" in msg and f"dataroot_gt='{out2 / 'gt.lmdb'}'" in msg
    assert f"dataroot_lq='{out1 / 'lq.lmdb'}'" in msg and "Fix: point dataroot_lq/gt/dgain at" in msg
    # LMDBs of an older build (no id): read, with a one-line warning
    for k in ("lq", "gt", "dgain"):
        lmdb_reader.forget_reader_env(str(out1 / f"{k}.lmdb"))  # this process reads it: close before writing
        env = lmdb.open(str(out1 / f"{k}.lmdb"))
        with env.begin(write=True) as txn:
            st = json.loads(bytes(txn.get(STATE_KEY)))
            del st["build_id"]
            txn.put(STATE_KEY, json.dumps(st).encode())
        env.close()
    records = []  # a handler of its own: other tests may have set the DiffIR logger up (no propagation)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())
    logging.getLogger("DiffIR").addHandler(handler)
    try:
        assert len(build_dataset(_lmdb_opt(out1))) == 3
    finally:
        logging.getLogger("DiffIR").removeHandler(handler)
    assert len([m for m in records if "carry no build id" in m]) == 1
    with pytest.raises(OptionError, match="different builds.*no build id"):
        build_dataset(_lmdb_opt(out1, dataroot_gt=str(out2 / "gt.lmdb")))


# ------------------------------------------------------------------ 4. disk full while building an LMDB
def test_disk_full_while_building_an_lmdb_says_so_and_resumes(tmp_path, monkeypatch):
    root = _make(tmp_path / "d", stems=("a", "b", "c", "e"))
    out = tmp_path / "lmdb"
    real_txn = lmdb_writer._write_txn
    calls = {"n": 0}
    free = {"bytes": 1 << 40}

    def full_after(n, exc):
        def write(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > n:
                free["bytes"] = 4096
                raise exc
            return real_txn(*args, **kwargs)
        return write

    monkeypatch.setattr(lmdb_writer, "_free_bytes", lambda path: free["bytes"])
    # the OS says ENOSPC
    monkeypatch.setattr(lmdb_writer, "_write_txn", full_after(5, OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(LmdbBuildError, match=r"Disk full while writing the LMDB .*lmdb.*Fix: free space.*build resumes"):
        build_lmdb(root, out, batch_items=1)
    # LMDB reports a short write as an I/O error: with no room left it is a full disk
    calls["n"], free["bytes"] = 0, 1 << 40
    monkeypatch.setattr(lmdb_writer, "_write_txn", full_after(2, lmdb.Error("mdb_txn_commit: Input/output error")))
    with pytest.raises(LmdbBuildError, match=r"Disk full .*Input/output error"):
        build_lmdb(root, out, batch_items=1)
    # the same error with room left is not called a full disk
    calls["n"] = 0
    monkeypatch.setattr(lmdb_writer, "_free_bytes", lambda path: 1 << 40)
    monkeypatch.setattr(lmdb_writer, "_write_txn", full_after(0, lmdb.Error("mdb_txn_commit: Input/output error")))
    with pytest.raises(LmdbBuildError, match=r"Writing the LMDB .* failed: .*Input/output error.*resumes") as ei:
        build_lmdb(root, out, batch_items=1)
    assert "Disk full" not in str(ei.value)
    # meta_info.txt on a full disk
    monkeypatch.setattr(lmdb_writer, "_write_txn", real_txn)

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lmdb_writer, "write_meta_info", no_room)
    with pytest.raises(LmdbBuildError, match=r"Disk full while writing the LMDB .*No space left"):
        build_lmdb(root, out, batch_items=1)
    monkeypatch.undo()
    with pytest.raises(OptionError, match="unfinished build"):  # the partial build is never read as complete
        build_dataset(_lmdb_opt(out))
    summary = build_lmdb(root, out, batch_items=1)  # space freed: the same command resumes and finishes
    assert summary["complete"] and summary["skipped"] == 4 and summary["written"] == 0
    ds = build_dataset(_lmdb_opt(out))
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.reader.read(3)["gt"], read_hdr(root / "gt" / "e.exr"))
    # no room to even open a new database (LMDB would crash on its lock file): refused up front
    monkeypatch.setattr(lmdb_writer, "_free_bytes", lambda path: 1000)
    with pytest.raises(LmdbBuildError, match="Disk full .*no room left to open"):
        build_lmdb(root, tmp_path / "other")


# ------------------------------------------------------------------ 5. check_dataset.py lists every problem
def test_check_dataset_lists_every_problem_in_one_run(tmp_path, capsys):
    check_dataset, _ = import_scripts()
    root = _make(tmp_path / "d", stems=("a", "b", "c", "e", "f"))
    os.remove(root / "gt" / "a.exr")  # unpaired LQ
    (root / "dg" / "b.txt").write_text("gamma: 2\n")  # bad dgain
    data = (root / "lq" / "c.jpg").read_bytes()
    (root / "lq" / "c.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    write_ldr(root / "lq" / "e.jpg", np.zeros((H + 8, W, 3), np.uint8))  # size mismatch
    yml = _yml(tmp_path, {"train": {**_opt(root, "train"), "gt_size": 16, "batch_size_per_gpu": 1,
                                    "num_worker_per_gpu": 0}})
    assert check_dataset.main(["-opt", str(yml)]) == 1
    out = capsys.readouterr().out
    assert "4 pairs FAILED" in out
    assert "have no GT partner" in out and "a.jpg" in out
    assert "b.txt' has no 'dgain:' line" in out
    assert "c.jpg' is a truncated JPEG" in out
    assert "e.jpg' is 32x32 but GT" in out
    # training raises one error with all of them, still a PairingError
    with pytest.raises(PairingError) as ei:
        build_dataset({**_opt(root, "train"), "gt_size": 16})
    assert isinstance(ei.value, DatasetCheckError)
    msg = str(ei.value)
    assert all(s in msg for s in ("a.jpg", "b.txt", "c.jpg", "e.jpg", "Nothing was trained"))
    with pytest.raises(PairingError, match="no GT partner"):  # with check: off, unpaired files still stop it
        build_dataset(_opt(root, check="off"))
    # a wrong option is a usage error (2); a clean set is 0
    bad = _yml(tmp_path, {"train": {**_opt(root, "train"), "gt_size": 16, "dataroot_gt": str(tmp_path / "nope")}}, "bad")
    assert check_dataset.main(["-opt", str(bad)]) == 2
    for s in ("a", "b", "c", "e"):
        for sub, ext in (("lq", ".jpg"), ("gt", ".exr"), ("dg", ".txt")):
            if (root / sub / f"{s}{ext}").exists():
                os.remove(root / sub / f"{s}{ext}")
    capsys.readouterr()
    assert check_dataset.main(["-opt", str(yml)]) == 0
    assert "1 pairs OK" in capsys.readouterr().out


# ------------------------------------------------------------------ 6. lossy half-float EXR with negative values
def test_lossy_half_exr_with_negative_values_is_checked_counted_and_clamped(tmp_path):
    root = tmp_path / "d"
    for sub in ("lq", "gt", "dg"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    expected = {}
    for stem, comp in (("piz", OpenEXR.PIZ_COMPRESSION), ("dwaa", OpenEXR.DWAA_COMPRESSION),
                       ("b44", OpenEXR.B44_COMPRESSION)):
        r = (50.0 + 4 * xx).astype(np.float16)
        g = (5.0 + 0.5 * yy).astype(np.float16)
        b = np.where(xx < 8, -0.25, 2.0).astype(np.float16)  # negative values, as renderers write them
        path = root / "gt" / f"{stem}.exr"
        OpenEXR.File({"compression": comp, "type": OpenEXR.scanlineimage}, {"R": r, "G": g, "B": b}).write(str(path))
        f = OpenEXR.File(str(path), separate_channels=True)
        assert f.channels()["R"].pixels.dtype == np.float16 and f.header()["compression"] == comp
        hdr = read_hdr(path)
        expected[f"{stem}.exr"] = int(np.count_nonzero(hdr < 0))
        assert expected[f"{stem}.exr"] > 0 and np.isfinite(hdr).all()
        write_ldr(root / "lq" / f"{stem}.jpg", np.rint(hdr_to_ldr(np.maximum(hdr, 0), 2.0, 2.2) * 255).astype(np.uint8))
        (root / "dg" / f"{stem}.txt").write_text(format_dgain_text(2.0, 2.2))
    ds = build_dataset(_opt(root, "train", gt_size=16))
    assert ds.check_report.ok and dict(ds.check_report.negatives) == expected
    assert any("clamped to 0" in n for n in ds.check_report.notes())
    for i in range(len(ds)):
        item = ds[i]
        assert float(item["gt"].min()) >= 0.0 and bool(item["gt"].isfinite().all())
    summary = build_lmdb(root, tmp_path / "lmdb")
    assert summary["negatives"] == {k[:-4]: v for k, v in expected.items()}
