"""What the program writes for users and the checkpoints it reads: no overwritten data, no half-run folders,
EXIF orientation at inference, normal file modes, clear errors for bad checkpoints and unwritable folders."""
from __future__ import annotations

import os
import pickle
import shutil
import socket
import stat
import struct
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
import torch
import yaml

import DiffIR.inference_pipeline as ip
from DiffIR import test_pipeline as tp
from DiffIR.archs import build_network
from DiffIR.data.synthetic_hdr import generate_dataset
from DiffIR.config.sections import check_val_options
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import CheckpointError, atomic_save, load_file
from DiffIR.utils.cli import run_cli
from DiffIR.utils.hdr_io import read_hdr, read_ldr, write_hdr
from DiffIR.utils.misc import atomic_write_bytes
from DiffIR.utils.errors import OptionError
from DiffIR.utils.runlock import RunLock

from conftest import ROOT
from helpers import TINY_NET, TINY_S2, run_entry, save_tiny_s2

class Payload:
    """A custom class: torch.save of one makes a checkpoint that weights_only loading must refuse."""


@pytest.fixture(scope="module")
def s2_files(tmp_path_factory) -> Path:
    """A tiny stage-2 checkpoint with its options file, and a folder of 3 LDR images + dgain files (+ HDR GT)."""
    root = tmp_path_factory.mktemp("s2")
    save_tiny_s2(root, hdr_max=1000)
    generate_dataset(root / "jpg", root / "hdr", root / "dgain", num_images=3, size=(24, 32), seed=5)
    return root


def _args(root: Path, out: Path, *extra: str, input_dir: Path = None) -> List[str]:
    return ["--input", str(input_dir or root / "jpg"), "--dgain", str(root / "dgain"), "--model",
            str(root / "net_g_5.pth"), "--opt", str(root / "net.yml"), "--output", str(out), *extra]


@pytest.mark.slow
def test_second_inference_into_the_same_output_is_refused(s2_files: Path, tmp_path: Path) -> None:
    """Two runs into one --output (with --overwrite) would silently replace each other's files: the folder's lock is
    held here, as a running inference holds it, and the run started meanwhile refuses before writing anything."""
    out = tmp_path / "out"
    holder = RunLock(str(out), "--output")
    holder.acquire()
    try:
        proc = run_entry(tmp_path, "inference_hdr.py", *_args(s2_files, out, "--overwrite"))
    finally:
        holder.release()
    assert proc.returncode == 2, proc.stderr
    assert (f"ERROR: --output '{out}' is in use by pid {os.getpid()} on host {socket.gethostname()} since "
            in proc.stderr), proc.stderr
    assert f"wait for it, or choose another --output (lock file {out}.lock)" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists() and not (tmp_path / "out.lock").exists()


def _copy_inputs(root: Path, dst: Path) -> Path:
    shutil.copytree(root / "jpg", dst)
    return dst


# ---------------------------------------------------------------------------------------------- 1. overwriting
def test_inference_refuses_to_overwrite_and_to_write_into_its_inputs(s2_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = ip.main(str(ROOT), _args(s2_files, out))
    before = {p: Path(p).read_bytes() for p in first}
    with pytest.raises(FileExistsError, match=r"3 output file\(s\) already exist.*im_000001.hdr.*--overwrite"):
        ip.main(str(ROOT), _args(s2_files, out, "--seed", "1"))
    assert {p: Path(p).read_bytes() for p in first} == before
    again = ip.main(str(ROOT), _args(s2_files, out, "--seed", "1", "--overwrite"))
    assert again == first and any(Path(p).read_bytes() != before[p] for p in first)
    assert not (tmp_path / "out.lock").exists()  # each run released its lock on the folder

    # a ground-truth folder given as --output: refused, every GT file untouched
    gt = tmp_path / "gt"
    shutil.copytree(s2_files / "hdr", gt)
    gt_bytes = {p.name: p.read_bytes() for p in gt.iterdir()}
    with pytest.raises(FileExistsError, match="im_000001.hdr, im_000002.hdr, im_000003.hdr"):
        ip.main(str(ROOT), _args(s2_files, gt))
    assert {p.name: p.read_bytes() for p in gt.iterdir()} == gt_bytes

    # an input folder, also through a link, is refused even with --overwrite
    link = tmp_path / "link"
    link.symlink_to(s2_files / "jpg")
    for folder, what in ((s2_files / "jpg", "--input"), (link, "--input"), (s2_files / "dgain", "--dgain")):
        with pytest.raises(OptionError, match=f"is the {what} folder"):
            ip.main(str(ROOT), _args(s2_files, folder, "--overwrite"))
    assert sorted(p.name for p in (s2_files / "jpg").iterdir()) == ["im_000001.jpg", "im_000002.jpg", "im_000003.jpg"]

    # two images of one stem would write one output
    dup = _copy_inputs(s2_files, tmp_path / "dup")
    cv2.imwrite(str(dup / "im_000001.png"), np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(OptionError, match="im_000001.jpg and im_000001.png"):
        ip.main(str(ROOT), _args(s2_files, tmp_path / "o2", input_dir=dup))
    assert not (tmp_path / "o2").exists()


def test_test_py_outputs_cannot_overwrite_inputs_or_each_other(tmp_path: Path) -> None:
    results = tmp_path / "results" / "run"
    sets = {"test_1": {"name": "A", "dataroot_lq": str(tmp_path / "d" / "jpg")},
            "test_2": {"name": "A", "dataroot_lq": str(tmp_path / "e" / "jpg")}}
    opt = {"datasets": sets, "path": {"results_root": str(results)}}
    with pytest.raises(OptionError, match="'datasets:test_2:name' and 'datasets:test_1:name' are both 'A'"):
        tp.check_test_outputs(opt)
    sets["test_2"]["name"] = "../../d/jpg"
    with pytest.raises(OptionError, match="plain folder name"):
        tp.check_test_outputs(opt)
    sets["test_2"] = {"name": "B", "dataroot_gt": str(results / "visualization" / "A")}
    with pytest.raises(OptionError, match="dataroot_gt.*inside this run's results folder"):
        tp.check_test_outputs(opt)
    link = tmp_path / "elsewhere"
    link.symlink_to(tmp_path / "results", target_is_directory=True)
    (tmp_path / "results").mkdir()
    sets["test_2"]["dataroot_gt"] = str(link / "run" / "gt")  # the same folder through a link
    with pytest.raises(OptionError, match="inside this run's results folder"):
        tp.check_test_outputs(opt)
    sets["test_2"]["dataroot_gt"] = str(tmp_path / "results" / "run_other")  # a sibling is fine
    tp.check_test_outputs(opt)
    with pytest.raises(OptionError, match="'val:suffix'.*path separator"):
        check_val_options({"suffix": "../x"})


def test_evaluation_refuses_to_replace_an_output_when_asked(tmp_path: Path) -> None:
    from DiffIR.models.evaluation import evaluate_dataset

    class Model:  # returns the input: enough to exercise the writer
        def feed_data(self, data):
            self.data = data

        def test(self):
            pass

        def get_current_visuals(self):
            return {"result": self.data["lq"], "lq": self.data["lq"]}

    class Loader(list):
        dataset = type("D", (), {"opt": {"name": "S"}})()

    loader = Loader([{"lq": torch.full((1, 3, 8, 8), 0.5), "lq_path": ["x/a.jpg"]}])
    save = tmp_path / "vis"
    evaluate_dataset(Model(), loader, check_val_options({"pbar": False}), save_dir=str(save), overwrite=False)
    first = (save / "a.hdr").read_bytes()
    with pytest.raises(FileExistsError, match="a.hdr' already exists"):
        evaluate_dataset(Model(), loader, check_val_options({"pbar": False}), save_dir=str(save), overwrite=False)
    assert (save / "a.hdr").read_bytes() == first
    evaluate_dataset(Model(), loader, check_val_options({"pbar": False}), save_dir=str(save))  # validation may rewrite its own


# ---------------------------------------------------------------------------------------------- 2. bad inputs
def test_bad_inputs_are_all_listed_before_any_output(s2_files: Path, tmp_path: Path) -> None:
    src = _copy_inputs(s2_files, tmp_path / "jpg")
    data = (src / "im_000002.jpg").read_bytes()
    (src / "im_000002.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (src / "im_000003.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"(?s)2 input problem\(s\).*im_000002.jpg.*truncated.*im_000003.jpg"):
        ip.main(str(ROOT), _args(s2_files, out, input_dir=src))
    assert not out.exists()


def test_a_file_failing_mid_run_is_listed_and_the_others_written(s2_files: Path, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    src = _copy_inputs(s2_files, tmp_path / "jpg")
    checked = ip.check_inputs

    def check_then_break(pairs):  # the file changes between the check and its turn
        metas = checked(pairs)
        (src / "im_000002.jpg").write_bytes(b"\xff\xd8 damaged")
        return metas

    monkeypatch.setattr(ip, "check_inputs", check_then_break)
    out = tmp_path / "out"
    with pytest.raises(ip.ImagesFailed, match=r"(?s)1 of 3 image\(s\) failed.*2 written.*im_000002.jpg"):
        ip.main(str(ROOT), _args(s2_files, out, input_dir=src))
    assert sorted(p.name for p in out.iterdir()) == ["im_000001.hdr", "im_000003.hdr"]
    shutil.copy(s2_files / "jpg" / "im_000002.jpg", src)  # whole again for the check, broken after it
    assert run_cli(lambda: ip.main(str(ROOT), _args(s2_files, tmp_path / "o2", input_dir=src))) == 2
    assert "ERROR: 1 of 3 image(s) failed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 3. EXIF orientation
def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation) after the JPEG's SOI marker."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_inference_follows_exif_orientation_training_keeps_pixels_as_stored(s2_files: Path, tmp_path: Path,
                                                                            capsys) -> None:
    img = np.full((24, 32, 3), 40, np.uint8)
    img[:8, :8] = 250  # bright block top-left as stored; orientation 6 (rotate 90° clockwise) shows it top-right
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    src = tmp_path / "jpg"
    src.mkdir()
    (src / "im_000001.jpg").write_bytes(_with_exif_orientation(enc.tobytes(), 6))

    stored = read_ldr(src / "im_000001.jpg")  # training, checks, LMDB: as stored, aligned with the HDR
    shown = read_ldr(src / "im_000001.jpg", exif_orientation=True)
    assert stored.shape == (24, 32, 3) and stored[:8, :8].mean() > 0.9
    assert shown.shape == (32, 24, 3) and shown[:8, -8:].mean() > 0.9 and shown[:8, :8].mean() < 0.2
    assert np.allclose(shown, np.rot90(stored, k=-1), atol=1 / 255)

    written = ip.main(str(ROOT), _args(s2_files, tmp_path / "out", input_dir=src))
    assert read_hdr(written[0]).shape == (32, 24, 3)
    assert "EXIF orientation tag is applied" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- 4. file modes
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_keep_the_normal_file_mode(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_bytes(str(tmp_path / "metrics.csv"), b"a\n")
        atomic_save({"w": torch.zeros(1)}, str(tmp_path / "net_g_1.pth"))
        write_hdr(str(tmp_path / "out.hdr"), np.ones((4, 4, 3), np.float32))
        for name in ("metrics.csv", "net_g_1.pth", "out.hdr"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name
        os.chmod(tmp_path / "metrics.csv", 0o640)  # a replaced file keeps its own mode
        atomic_write_bytes(str(tmp_path / "metrics.csv"), b"b\n")
        assert stat.S_IMODE(os.stat(tmp_path / "metrics.csv").st_mode) == 0o640
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------- 5. clear errors
def _bad_checkpoints(folder: Path) -> dict:
    folder.mkdir(exist_ok=True)
    good = folder / "good.pth"
    torch.save({"params": {"w": torch.zeros(3)}}, good)
    data = good.read_bytes()
    files = {"random": os.urandom(2000), "text": b"name: experiment\nlr: 1e-4\n", "truncated": data[: len(data) // 2],
             "empty": b"", "callable": pickle.dumps(os.system)}
    for name, payload in files.items():
        (folder / f"{name}.pth").write_bytes(payload)
    torch.save({"params": Payload()}, folder / "object.pth")
    return {name: folder / f"{name}.pth" for name in [*files, "object"]}


def test_unusable_checkpoints_give_one_clear_error(tmp_path: Path) -> None:
    files = _bad_checkpoints(tmp_path)
    for name, path in files.items():
        with pytest.raises(CheckpointError) as info:
            load_file(str(path))
        msg = str(info.value)
        assert str(path) in msg and "weights_only" not in msg and info.value.__cause__ is None
        if name in ("callable", "object"):
            assert "refused as unsafe" in msg and ("posix.system" in msg or "Payload" in msg)
        else:
            assert "Cannot read" in msg and "unsafe" not in msg
    assert isinstance(info.value, ValueError)  # → exit status 2 from every entry script


class RunsCode:
    """Unpickling one calls os.system (``posix.system``): the classic checkpoint that runs code when loaded."""

    def __reduce__(self):
        return os.system, ("echo this must never run",)


def test_checkpoint_that_imports_code_is_refused_as_unsafe_not_damaged(tmp_path: Path) -> None:
    torch.save({"params": RunsCode()}, tmp_path / "zip.pth")  # the pickle inside torch's zip container
    with open(tmp_path / "raw.pth", "wb") as f:  # a raw pickle stream (torch's legacy format)
        pickle.dump({"params": RunsCode()}, f)
    for name in ("zip.pth", "raw.pth"):
        with pytest.raises(CheckpointError) as info:
            load_file(str(tmp_path / name), "network checkpoint")
        msg = str(info.value)
        assert f"Refused to load network checkpoint '{tmp_path / name}': it holds pickled Python code" in msg, msg
        assert "posix.system" in msg and "refused as unsafe" in msg
        assert "damaged" not in msg and "truncated" not in msg and "weights_only" not in msg


def test_checkpoint_of_another_architecture_names_file_network_and_keys(s2_files: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(yaml.safe_dump({"network_g": dict(TINY_S2, dim=16)}))
    args = _args(s2_files, tmp_path / "o")
    args[args.index("--opt") + 1] = str(wrong)
    with pytest.raises(CheckpointError) as info:
        ip.main(str(ROOT), args)
    msg = str(info.value)
    assert "net_g_5.pth' [params_ema] does not fit network_g" in msg and "(DiffIRS2)" in msg
    assert "shapes differ:" in msg and "more)" in msg and "check that network_g" in msg and msg.count("\n") == 0


def _train_yml(tmp_path: Path, **path_opt) -> str:
    data = tmp_path / "data"
    opt = {"name": "t", "model_type": "DiffIRS1Model", "num_gpu": 0, "manual_seed": 0,
           "datasets": {"train": {"name": "T", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "hdr"),
                                  "dataroot_lq": str(data / "jpg"), "dataroot_dgain": str(data / "dgain"),
                                  "synthetic": {"num_images": 2, "size": 32, "seed": 3}, "io_backend": {"type": "disk"},
                                  "num_worker_per_gpu": 0, "batch_size_per_gpu": 1, "gt_size": 16}},
           "network_g": dict(TINY_NET),
           "path": path_opt,
           "train": {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 2, "pixel_opt": {"type": "L1Loss"}},
           "logger": {"print_freq": 1, "save_checkpoint_freq": 10, "use_tb_logger": False, "language": "en"}}
    path = tmp_path / "t.yml"
    path.write_text(yaml.safe_dump(opt))
    return str(path)


@pytest.mark.slow
def test_entry_scripts_exit_2_without_traceback_on_bad_checkpoints(s2_files: Path, tmp_path: Path, capsys) -> None:
    files = _bad_checkpoints(tmp_path / "ck")
    # train_hdr.py: pretrain_network_g not a checkpoint, of another architecture, a pickle payload; resume_state
    for path_opt, expected in (({"pretrain_network_g": str(files["random"])}, "not a PyTorch checkpoint"),
                               ({"pretrain_network_g": str(s2_files / "net_g_5.pth"), "param_key_g": "params_ema"},
                                "does not fit network_g (DiffIRS1)"),
                               ({"pretrain_network_g": str(files["object"])}, "refused as unsafe"),
                               ({"resume_state": str(files["truncated"])}, "damaged or truncated")):
        yml = _train_yml(tmp_path, **path_opt)
        assert run_cli(lambda: train_pipeline(str(tmp_path), ["-opt", yml])) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "experiments").exists()

    # test.py: a pickle payload as weights; a results folder that cannot be created
    test_opt = yaml.safe_load(open(_train_yml(tmp_path, pretrain_network_g=str(files["callable"]))))
    test_opt["datasets"] = {"test_1": dict(test_opt["datasets"]["train"], name="S")}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test_opt))
    assert run_cli(lambda: tp.test_pipeline(str(tmp_path), ["-opt", str(tmp_path / "test.yml")])) == 2
    assert "refused as unsafe" in capsys.readouterr().err
    s1_weights = tmp_path / "s1.pth"  # valid weights: the model is built before the results folder is set up
    torch.save({"params": build_network(dict(test_opt["network_g"])).state_dict()}, s1_weights)
    test_opt["path"]["pretrain_network_g"] = str(s1_weights)
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test_opt))
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "results").write_text("a file where the results folder goes")
    assert run_cli(lambda: tp.test_pipeline(str(blocked), ["-opt", str(tmp_path / "test.yml")])) == 2
    assert f"Cannot set up the results folder '{blocked / 'results' / 't'}'" in capsys.readouterr().err

    # inference_hdr.py (a real process): an output folder that cannot be created, then a text file as the model
    (tmp_path / "afile").write_text("x")
    proc = run_entry(tmp_path, "inference_hdr.py", *_args(s2_files, tmp_path / "afile" / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"Cannot create the output folder '{tmp_path / 'afile' / 'o'}'" in proc.stderr
    args = _args(s2_files, tmp_path / "o")
    args[args.index("--model") + 1] = str(files["text"])
    assert run_cli(lambda: ip.main(str(ROOT), args)) == 2
    assert "text.pth': it is not a PyTorch checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 6. previews
def test_inference_preview_writes_a_tone_mapped_png_beside_each_output(s2_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = ip.main(str(ROOT), _args(s2_files, out, "--preview"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"im_00000{i}.{ext}" for i in (1, 2, 3) for ext in ("hdr", "png")])
    png = cv2.imread(str(out / "im_000001.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.shape == read_hdr(written[0]).shape == (24, 32, 3) and png.max() > 0
    (out / "im_000002.hdr").unlink()  # only the preview is left of this one: still refused
    with pytest.raises(FileExistsError, match="im_000002.png"):
        ip.main(str(ROOT), _args(s2_files, out, "--preview"))


# ---------------------------------------------------------------------------------------------- 7. safetensors
def test_safetensors_export_loads_in_inference_and_test(s2_files: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from export_safetensors import main as export_main
    from safetensors import safe_open

    exp = tmp_path / "experiments" / "s2run"
    (exp / "models").mkdir(parents=True)
    shutil.copy(s2_files / "net_g_5.pth", exp / "models" / "net_g_5.pth")
    (exp / "options_s2run.yml").write_text(yaml.safe_dump(
        {"network_g": TINY_S2, "datasets": {"train": {"hdr_max": 500, "tone_curve": "log"}}}))
    st = tmp_path / "s2run.safetensors"
    assert export_main(["--model", str(exp / "models" / "net_g_5.pth"), "--out", str(st)]) == 0
    with safe_open(str(st), framework="pt") as f:
        meta = f.metadata()
    assert yaml.safe_load(meta["network_g"]) == TINY_S2 and meta["iteration"] == "5"
    assert yaml.safe_load(meta["tone"]) == {"hdr_max": 500.0, "tone_curve": "log", "lq_linearize": True}
    assert meta["source"] == str(exp / "models" / "net_g_5.pth") and meta["param_key"] == "params_ema"
    assert set(load_file(str(st))) == set(torch.load(s2_files / "net_g_5.pth")["params_ema"])
    assert export_main(["--model", str(exp / "models" / "net_g_5.pth"), "--out", str(st)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err

    # inference: the network and tone from the metadata, the same output as the .pth with the same options
    args = _args(s2_files, tmp_path / "st")
    args[args.index("--model") + 1] = str(st)
    del args[args.index("--opt"):args.index("--opt") + 2]
    from_st = read_hdr(ip.main(str(ROOT), args)[0])
    assert "Network options: the metadata of" in capsys.readouterr().out
    pth_args = _args(s2_files, tmp_path / "pth")
    pth_args[pth_args.index("--opt") + 1] = str(exp / "options_s2run.yml")
    assert np.array_equal(from_st, read_hdr(ip.main(str(ROOT), pth_args)[0]))

    # test.py: path:pretrain_network_g may name the .safetensors file; same scores as the .pth
    scores = {}
    for weights in (str(st), str(s2_files / "net_g_5.pth")):
        opt = {"name": f"t_{Path(weights).suffix[1:]}", "model_type": "DiffIRS2Model", "num_gpu": 0,
               "manual_seed": 0, "network_g": TINY_S2, "path": {"pretrain_network_g": weights},
               "datasets": {"test_1": {"name": "S", "type": "LDR_HDR_PairedDataset", "hdr_max": 500,
                                       "dataroot_lq": str(s2_files / "jpg"), "dataroot_gt": str(s2_files / "hdr"),
                                       "dataroot_dgain": str(s2_files / "dgain"), "io_backend": {"type": "disk"}}},
               "val": {"pbar": False, "metrics": {"psnr": {"type": "calculate_psnr"}}}, "logger": {"language": "en"}}
        yml = tmp_path / f"{opt['name']}.yml"
        yml.write_text(yaml.safe_dump(opt))
        scores[weights] = tp.test_pipeline(str(tmp_path), ["-opt", str(yml)])["results"]["S"].metrics["psnr"]
    assert len(set(scores.values())) == 1

    # a damaged .safetensors file is a clear error too
    st.write_bytes(st.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="s2run.safetensors': it is not a valid .safetensors file"):
        load_file(str(st))
