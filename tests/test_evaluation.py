"""Evaluation: tiled inference, the shared metric loop, HDR outputs, test.py and validation during training."""
import csv
import glob
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

import DiffIR.models.base_model as base_model
from DiffIR import test_pipeline as tp
from DiffIR.config.sections import check_val_options
from DiffIR.data import build_dataloader, build_dataset
from DiffIR.models import build_model
from DiffIR.models.evaluation import ToneDomain, evaluate_dataset
from DiffIR.models.tiling import tiled_forward
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import atomic_save
from DiffIR.utils.hdr_io import read_hdr
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import log_tone_map

from conftest import ROOT
from helpers import TINY_NET, run_entry, train_options

ALL_METRICS = {
    "psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False},
    "ssim": {"type": "calculate_ssim"},
    "pu21_psnr": {"type": "calculate_pu21_psnr", "lum_scale": 1.0},
    "pu21_ssim": {"type": "calculate_pu21_ssim"},
    "psnr_mu": {"type": "calculate_psnr_mu"},
    "psnr_l": {"type": "calculate_psnr_l"},
}


def _model(val=None, weights=None, visualization=None):
    torch.manual_seed(0)
    opt = {"name": "t", "model_type": "DiffIRS1Model", "num_gpu": 0, "is_train": False, "dist": False,
           "network_g": dict(TINY_NET, identity_init=False), "val": dict(val or {}),
           "path": {"pretrain_network_g": weights, "param_key_g": "params_ema", "strict_load_g": True,
                    "visualization": visualization}}
    return build_model(opt)


def _set_opt(tmp_path, phase="test_1", n=2, size=(40, 44)):
    data = tmp_path / "data"
    return {"name": "Tiny", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "hdr"),
            "dataroot_lq": str(data / "jpg"), "dataroot_dgain": str(data / "dgain_info"),
            "synthetic": {"num_images": n, "size": list(size), "seed": 7}, "io_backend": {"type": "disk"},
            "phase": phase.split("_")[0]}


def _loader(tmp_path):
    opt = _set_opt(tmp_path)
    return build_dataloader(build_dataset(opt), opt, 0, False, None, 0)


def _weights(tmp_path):
    torch.manual_seed(0)
    sd = build_model({"name": "w", "model_type": "DiffIRS1Model", "num_gpu": 0, "is_train": False,
                      "network_g": dict(TINY_NET), "path": {}}).net_g.state_dict()
    path = tmp_path / "net_g_tiny.pth"
    atomic_save({"params": sd, "params_ema": sd}, str(path))
    return str(path)


# ------------------------------------------------------------------------------------------- tiling
def test_tiled_forward_blends_to_the_whole_image_result():
    x = torch.rand(1, 3, 50, 70)
    y = torch.rand(1, 2, 50, 70)
    seen = []

    def fn(a, b):
        seen.append(tuple(a.shape[-2:]))
        assert a.shape[-2:] == b.shape[-2:]
        return torch.cat([a * 2 + 1, b], dim=1)

    whole = fn(x, y)
    tiled = tiled_forward(fn, x, y, tile=24, overlap=8, multiple=8)
    assert tiled.shape == (1, 5, 50, 70)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert len(seen) > 4 and all(h % 8 == 0 and w % 8 == 0 for h, w in seen[1:])
    seen.clear()
    out = tiled_forward(lambda a: a[:, :1], x, tile=None, multiple=8)  # whole image: padded once, cropped back
    assert out.shape == (1, 1, 50, 70) and seen == []
    with pytest.raises(ValueError, match="every input must be"):
        tiled_forward(fn, x, y[..., :60], tile=24)
    with pytest.raises(ValueError, match="multiple of 8"):
        tiled_forward(fn, x, y, tile=20, overlap=4)
    with pytest.raises(ValueError, match="tile_overlap"):
        tiled_forward(fn, x, y, tile=24, overlap=20)


def test_tiled_model_inference_matches_whole_image():
    """No visible seams: tiled and whole-image outputs of the network agree within a small tolerance."""
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 3, 72, 90, generator=g) * 0.8
    gt = (lq + 0.05 * torch.rand(1, 3, 72, 90, generator=g)).clamp(0, 1)
    outs = {}
    for key, val in (("whole", {}), ("tiled", {"tile_size": 32, "tile_overlap": 16}),
                     ("no_overlap", {"tile_size": 32, "tile_overlap": 0})):
        model = _model(val)
        model.feed_data({"lq": lq, "gt": gt})
        model.test()
        outs[key] = model.get_current_visuals()["result"]
    assert outs["tiled"].shape == lq.shape
    diff = (outs["tiled"] - outs["whole"]).abs()
    assert diff.max() < 1e-2 and diff.mean() < 1e-3, (diff.max(), diff.mean())
    seams = (outs["no_overlap"] - outs["whole"]).abs().max()  # abutting tiles show their borders
    assert seams > 5 * diff.max(), (seams, diff.max())


# ------------------------------------------------------------------------------------------- domain
def test_tone_domain_inverts_the_dataset_curve(tmp_path):
    hdr = np.array([0.0, 0.5, 10.0, 999.0, 1000.0, 3000.0], dtype=np.float32).reshape(1, 2, 3)
    t = torch.from_numpy(log_tone_map(hdr)).permute(2, 0, 1)
    dom = ToneDomain("log", 1000.0)
    np.testing.assert_allclose(dom.to_linear(t, clip_top=False), hdr, rtol=1e-5, atol=1e-5)
    assert dom.to_linear(t).max() == pytest.approx(1000.0, rel=1e-5)  # outputs clipped at hdr_max like the fork
    lin = ToneDomain("linear", 500.0).to_linear(torch.full((3, 1, 1), 0.5))
    assert lin.dtype == np.float32 and lin.shape == (1, 1, 3) and lin[0, 0, 0] == 250.0
    loader = _loader(tmp_path)
    assert ToneDomain.from_dataset(loader.dataset) == ToneDomain("log", 1000.0)
    item = loader.dataset[0]  # the GT tensor maps back to the GT file's values (same linear units)
    np.testing.assert_allclose(dom.to_linear(item["gt"], clip_top=False), read_hdr(item["gt_path"]), rtol=1e-4,
                               atol=1e-4)


# ------------------------------------------------------------------------------------------- outputs
def test_evaluate_writes_linear_hdr_that_standard_tools_read(tmp_path):
    import OpenEXR

    model = _model()
    loader = _loader(tmp_path)
    files = {}
    for fmt in ("npy", "exr", "hdr"):
        res = evaluate_dataset(model, loader, check_val_options({"metrics": ALL_METRICS, "save_format": fmt, "pbar": False}),
                               save_dir=str(tmp_path / fmt), suffix="s")
        files[fmt] = sorted(p for p in res.saved if not p.endswith(".png"))
        assert len(files[fmt]) == 2 and all(p.endswith(f"_s.{fmt}") for p in files[fmt])
        assert len(res.saved) == 4  # plus the PNG previews
    assert res.images == 2 and set(res.metrics) == set(ALL_METRICS) == set(res.baseline)
    assert all(np.isfinite(v) for v in res.metrics.values())
    assert [r["image"] for r in res.per_image] == ["im_000001", "im_000002"]
    # npy: exactly the model output mapped back to linear units
    model.feed_data(next(iter(loader)))
    model.test()
    expected = ToneDomain().to_linear(model.get_current_visuals()["result"])
    ref = np.load(files["npy"][0])
    np.testing.assert_array_equal(ref, expected)
    assert ref.max() > 10.0  # linear units (peak 1000), not the [0, 1] network domain
    # EXR through the OpenEXR package: lossless float32 RGB
    exr = OpenEXR.File(files["exr"][0]).channels()["RGB"].pixels
    np.testing.assert_array_equal(exr, ref)
    # Radiance .hdr through OpenCV (BGR in memory): equal within RGBE precision (< 1 % of the pixel's max channel)
    hdr = cv2.imread(files["hdr"][0], cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert hdr.dtype == np.float32 and hdr.shape == ref.shape
    assert np.all(np.abs(hdr - ref) <= 0.01 * ref.max(axis=2, keepdims=True) + 1e-6)
    png = cv2.imread(files["hdr"][0][:-4] + ".png")
    assert png.dtype == np.uint8 and png.shape == ref.shape


# ------------------------------------------------------------------------------------------- test.py
def _test_yml(tmp_path, weights, name="tiny_test", **val):
    opt = {"name": name, "model_type": "DiffIRS1Model", "num_gpu": 0, "manual_seed": 0,
           "datasets": {"test_1": {k: v for k, v in _set_opt(tmp_path).items() if k != "phase"}},
           "network_g": dict(TINY_NET),
           "path": {"pretrain_network_g": weights, "param_key_g": "params_ema", "strict_load_g": True},
           "val": {"save_img": True, "suffix": None, "save_format": "hdr", "tile_size": 24, "tile_overlap": 8,
                   "pbar": False, "metrics": ALL_METRICS, **val},
           "logger": {"language": "en"}}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


def test_test_pipeline_writes_table_outputs_and_log(tmp_path):
    yml = _test_yml(tmp_path, _weights(tmp_path))
    out = tp.test_pipeline(str(tmp_path), ["-opt", yml])
    root = tmp_path / "results" / "tiny_test"
    assert out["results_root"] == str(root)
    with open(root / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dataset", "source", "images", *ALL_METRICS]
    assert [r[:3] for r in rows[1:]] == [["Tiny", "model", "2"], ["Tiny", "input", "2"]]
    doc = json.loads((root / "metrics.json").read_text())
    tiny = doc["sets"]["Tiny"]
    assert tiny["images"] == 2 and set(tiny["metrics"]) == set(ALL_METRICS) == set(tiny["input"])
    assert float(rows[1][5]) == pytest.approx(tiny["metrics"]["pu21_psnr"], abs=1e-4)
    assert len(tiny["per_image"]) == 2 and doc["checkpoint"].endswith("net_g_tiny.pth")
    hdrs = sorted(glob.glob(str(root / "visualization" / "Tiny" / "*.hdr")))
    assert [p.rsplit("/", 1)[1] for p in hdrs] == ["im_000001_tiny_test.hdr", "im_000002_tiny_test.hdr"]
    assert read_hdr(hdrs[0]).shape == (40, 44, 3)
    log = open(glob.glob(str(root / "test_tiny_test_*.log"))[0], encoding="utf-8").read()
    assert "Test results" in log and "pu21_psnr" in log and "metrics.csv" in log


def test_result_files_are_replaced_atomically(tmp_path):
    from DiffIR.utils.misc import atomic_write_bytes

    path = tmp_path / "out" / "metrics.csv"
    atomic_write_bytes(str(path), b"good\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(str(path), "not bytes")  # fails mid-write
    assert path.read_bytes() == b"good\n" and [p.name for p in path.parent.iterdir()] == ["metrics.csv"]


@pytest.mark.slow
def test_test_pipeline_errors_before_any_work(tmp_path):
    weights = _weights(tmp_path)
    yml = _test_yml(tmp_path, weights, name="nogt")
    opt = yaml.safe_load(open(yml))
    del opt["datasets"]["test_1"]["dataroot_gt"]
    open(yml, "w").write(yaml.safe_dump(opt))
    with pytest.raises(OptionError, match="'datasets:test_1' has no dataroot_gt.*ground truth.*stage 2"):
        tp.test_pipeline(str(tmp_path), ["-opt", yml])
    with pytest.raises(OptionError, match="'val:tile_size' must be a positive multiple of 8"):
        tp.test_pipeline(str(tmp_path), ["-opt", _test_yml(tmp_path, weights, name="t2", tile_size=20)])
    with pytest.raises(OptionError, match="'val:save_format'"):
        tp.test_pipeline(str(tmp_path), ["-opt", _test_yml(tmp_path, weights, name="t3", save_format="png")])
    with pytest.raises(OptionError, match="tile_sise.*did you mean 'tile_size'"):
        tp.test_pipeline(str(tmp_path), ["-opt", _test_yml(tmp_path, weights, name="t4", tile_sise=64)])
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "data").exists()  # nothing generated either
    missing = _test_yml(tmp_path, str(tmp_path / "nope.pth"), name="t5")
    proc = run_entry(tmp_path, "test.py", "-opt", missing)
    assert proc.returncode == 2
    assert "ERROR:" in proc.stderr and "path:pretrain_network_g" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["test_DiffIRs1_hdr.yml", "test_demo_DiffIRs1_hdr.yml", "origin"])
def test_test_option_files_are_accepted(name, tmp_path):
    from conftest import REFERENCE
    from DiffIR.metrics import check_metric_options

    from DiffIR.config.loading import finalize_options, load_yaml

    path = REFERENCE / "origin_options" / "test_DiffIRs1_hdr.yml" if name == "origin" else ROOT / "options" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    opt = finalize_options(load_yaml(str(path)), str(tmp_path), is_train=False, file=str(path))
    assert opt["path"]["results_root"] == str(tmp_path / "results" / opt["name"])
    check_val_options(opt["val"])
    check_metric_options(opt["val"]["metrics"])
    assert tp._eval_phases(opt)


# ------------------------------------------------------------------------------------------- training
def test_training_validation_uses_the_shared_loop_with_hdr_metrics(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []
    real = base_model.evaluate_dataset
    monkeypatch.setattr(base_model, "evaluate_dataset", lambda *a, **k: calls.append(k["suffix"]) or real(*a, **k))
    assert real is tp.evaluate_dataset  # test.py and validation share one loop
    yml = train_options(tmp_path, name="hdrval", total_iter=4)
    opt = yaml.safe_load(yml.read_text())
    opt["val"].update({"val_freq": 2, "save_img": True, "pbar": False,
                       "metrics": {"psnr": ALL_METRICS["psnr"], "pu21_psnr": ALL_METRICS["pu21_psnr"],
                                   "psnr_l": dict(ALL_METRICS["psnr_l"], better="higher")}})
    opt["logger"]["language"] = "en"
    yml.write_text(yaml.safe_dump(opt))
    out = train_pipeline(str(tmp_path), ["-opt", str(yml)])
    assert calls == ["2", "4"]
    assert set(out["results"]["V"]) == {"psnr", "pu21_psnr", "psnr_l"} == set(out["baseline"]["V"])
    exp = tmp_path / "experiments" / "hdrval"
    log = open(sorted(glob.glob(str(exp / "train_*.log")))[-1], encoding="utf-8").read()
    assert "# pu21_psnr:" in log and "Best:" in log and "(input:" in log
    assert "Final quality (val set V, pu21_psnr)" in log
    assert len(glob.glob(str(exp / "visualization" / "V" / "*_4.hdr"))) == 2
    acc = EventAccumulator(glob.glob(str(tmp_path / "tb_logger" / "hdrval" / "events.*"))[0],
                           size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"metrics/V/psnr", "metrics/V/pu21_psnr", "metrics/V/psnr_l", "metrics/V/pu21_psnr_input"} <= tags
    assert [e.step for e in acc.Scalars("metrics/V/pu21_psnr")] == [2, 4]
