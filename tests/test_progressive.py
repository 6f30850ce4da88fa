"""The progressive pipeline (train.py): batch schedule, deblurring dataset, option files, real runs and resume."""
import glob
import logging
import os
import random

import cv2
import numpy as np
import pytest
import torch
import yaml

from DiffIR.batch_schedule import FixedBatchSchedule, ProgressiveBatchSchedule
from DiffIR.data import build_dataloader, build_dataset
from DiffIR.utils.logger import MESSAGES, Messages
from DiffIR.utils.errors import OptionError

from conftest import ROOT
from helpers import TINY_NET, log_text, run_entry

OFFICIAL_S1 = {"batch": 8, "gt_size": 512, "mini_batch_sizes": [8, 4, 2, 2, 1, 1],
               "iters": [92000, 80000, 38000, 33000, 33000, 24000], "gt_sizes": [192, 256, 320, 384, 464, 512]}


def _schedule(batch=8, gt_size=512, mini=(8, 4, 2, 2, 1, 1), iters=(92000, 80000, 38000, 33000, 33000, 24000),
              sizes=(192, 256, 320, 384, 464, 512), total=300000):
    return ProgressiveBatchSchedule(batch, gt_size, list(mini), list(iters), list(sizes), total)


def _official_stage(groups, current_iter):
    """The official train_pipeline.py's stage lookup, restated: the first cumulative bound >= current_iter."""
    j = np.nonzero(~(current_iter > groups))[0]
    return len(groups) - 1 if len(j) == 0 else int(j[0])


# ------------------------------------------------------------------ schedule
def test_stage_sizes_at_every_boundary_and_beside_it():
    s = _schedule()
    bounds = [92000, 172000, 210000, 243000, 276000, 300000]
    assert s.boundaries == bounds
    expected = list(zip(OFFICIAL_S1["mini_batch_sizes"], OFFICIAL_S1["gt_sizes"]))
    assert s.sizes_at(1) == expected[0]
    for k, b in enumerate(bounds):
        assert s.sizes_at(b - 1) == expected[k], b
        assert s.sizes_at(b) == expected[k], b  # the boundary iteration still belongs to its stage
        assert s.sizes_at(b + 1) == expected[min(k + 1, 5)], b
    assert s.sizes_at(10 ** 7) == expected[-1]  # past sum(iters): the last stage goes on
    groups = np.cumsum(OFFICIAL_S1["iters"])
    for it in [1, 2] + [b + d for b in bounds for d in (-1, 0, 1)] + [350000]:
        assert s.stage_index(it) == _official_stage(groups, it), it
    assert [s.stage_range(k) for k in range(6)] == [(1, 92000), (92001, 172000), (172001, 210000), (210001, 243000),
                                                    (243001, 276000), (276001, 300000)]


def _batch(n=8, size=32, extra=True):
    lq = torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size)
    b = {"lq": lq, "gt": lq + 0.5, "lq_path": [f"lq{i}" for i in range(n)], "gt_path": [f"gt{i}" for i in range(n)]}
    if extra:
        b["dgain"] = torch.arange(n, dtype=torch.float32)
        b["gamma"] = torch.arange(n, dtype=torch.float32) + 100
    return b


def test_call_subsets_and_crops_consistently_like_the_official_loop():
    s = _schedule(batch=8, gt_size=32, mini=(8, 3, 8), iters=(2, 2, 2), sizes=(16, 24, 32), total=6)
    b = _batch()
    random.seed(5)
    out = s(b, 3)  # stage 2: 3 samples, 24 x 24
    random.seed(5)  # the official draws, in the official order
    idx = random.sample(range(8), k=3)
    x0, y0 = int((32 - 24) * random.random()), int((32 - 24) * random.random())
    assert out["lq"].shape == out["gt"].shape == (3, 3, 24, 24)
    torch.testing.assert_close(out["lq"], b["lq"][idx][:, :, x0:x0 + 24, y0:y0 + 24])
    torch.testing.assert_close(out["gt"], out["lq"] + 0.5)  # same window and samples for LQ and GT
    assert out["lq_path"] == [f"lq{i}" for i in idx] and out["gt_path"] == [f"gt{i}" for i in idx]
    assert out["dgain"].tolist() == [float(i) for i in idx] and out["gamma"].tolist() == [i + 100.0 for i in idx]
    # full batch and full size: untouched, and no random numbers consumed
    random.seed(1)
    state = random.getstate()
    assert s(b, 6) is not b and s(b, 6)["lq"] is b["lq"]
    assert random.getstate() == state
    # stage 1: full batch, only cropped (all 8 samples in order)
    out1 = s(b, 1)
    assert out1["lq"].shape == (8, 3, 16, 16) and out1["lq_path"] == b["lq_path"]
    # a loader batch of k x batch_size (non-distributed multi-GPU) keeps k x mini_batch_size
    assert s(_batch(n=16), 3)["lq"].shape[0] == 6


def test_each_switch_is_logged_once_in_the_configured_language(records):
    s = _schedule(batch=4, gt_size=32, mini=(4, 2), iters=(2, 2), sizes=(16, 32), total=4)
    summary = s.summary(Messages("zh"))
    assert "第 1 阶段: 第 1-2 次迭代, 每GPU批次大小 4, 图像块尺寸 16" in summary
    for it in range(1, 5):
        s(_batch(n=4), it)
    switches = [r.getMessage() for r in records if "渐进式训练第" in r.getMessage()]
    assert switches == ["渐进式训练第 1/2 阶段 (第 1-2 次迭代): 图像块尺寸更新为 16, 每GPU批次大小更新为 4",
                        "渐进式训练第 2/2 阶段 (第 3-4 次迭代): 图像块尺寸更新为 32, 每GPU批次大小更新为 2"]
    en = _schedule(batch=4, gt_size=32, mini=(4, 2), iters=(2, 2), sizes=(16, 32), total=4)
    en.summary(Messages("en"))
    records.clear()
    en(_batch(n=4), 3)  # a resumed run starts inside stage 2: that stage is announced
    assert [r.getMessage() for r in records] == [
        "Progressive training stage 2/2 (iterations 3-4): updating patch size to 32 and batch size per gpu to 2"]
    for key in ("progressive_config", "progressive_stage_line", "progressive_switch", "progressive_iters_short",
                "progressive_iters_long"):
        assert key in MESSAGES["zh"] and key in MESSAGES["en"]


def test_iters_total_mismatch_warns(records):
    _schedule(iters=(10, 10, 10, 10, 10, 10), total=100).summary(Messages("en"))
    _schedule(iters=(10, 10, 10, 10, 10, 10), total=25).summary(Messages("en"))
    _schedule(iters=(10, 10, 10, 10, 10, 10), total=60).summary(Messages("en"))
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "(60) is less than train:total_iter (100)" in warnings[0] and "until iteration 100" in warnings[0]
    assert "exceeds train:total_iter (25)" in warnings[1] and "in stage 3; the 3 later stage(s) never run" in warnings[1]


def _opt(**train):
    base = {"batch_size_per_gpu": 8, "gt_size": 512, "mini_batch_sizes": [8, 4], "iters": [10, 10],
            "gt_sizes": [256, 512]}
    base.update(train)
    return {"datasets": {"train": {k: v for k, v in base.items() if v is not None}}, "train": {"total_iter": 20}}


@pytest.mark.parametrize("train, words", [
    ({"iters": [10]}, "one entry per stage"),
    ({"gt_sizes": [256, 600]}, "'datasets:train:gt_sizes[1]' = 600 is larger than 'datasets:train:gt_size' = 512"),
    ({"mini_batch_sizes": [8, 16]}, "'datasets:train:mini_batch_sizes[1]' = 16 is larger than"),
    ({"iters": [10, 0]}, "'datasets:train:iters[1]' must be a positive integer"),
    ({"iters": "10, 10"}, "'datasets:train:iters' must be a non-empty list"),
    ({"gt_sizes": None}, "sets mini_batch_sizes, iters but not gt_sizes"),
    ({"gt_size": None}, "'datasets:train:gt_size' is missing"),
])
def test_bad_progressive_options_are_named(train, words):
    with pytest.raises(OptionError) as e:
        ProgressiveBatchSchedule.from_options(_opt(**train))
    assert words in str(e.value) and "Fix" in str(e.value), str(e.value)


def test_from_options_without_progressive_keys_is_one_stage_and_fixed_schedule_refuses_them():
    s = ProgressiveBatchSchedule.from_options(_opt(mini_batch_sizes=None, iters=None, gt_sizes=None))
    assert s.num_stages == 1 and s.sizes_at(1) == s.sizes_at(20) == (8, 512)
    s = ProgressiveBatchSchedule.from_options(_opt(iters=[10.0, 1e1]))  # YAML floats such as !!float 1e4
    assert s.boundaries == [10, 20]
    with pytest.raises(OptionError, match="run train.py for progressive training"):
        FixedBatchSchedule.from_options(_opt())



def test_one_schedule_choice_train_py_without_progressive_keys_is_the_fixed_schedule():
    from DiffIR.batch_schedule import schedule_from_options

    plain = _opt(mini_batch_sizes=None, iters=None, gt_sizes=None)
    for choice in (schedule_from_options(plain), ProgressiveBatchSchedule.from_options(plain),
                   FixedBatchSchedule.from_options(plain)):
        assert type(choice) is FixedBatchSchedule and (choice.batch_size, choice.gt_size) == (8, 512)
    batch = _batch(n=8)
    assert schedule_from_options(plain)(batch, 1) is batch
    assert type(schedule_from_options(_opt())) is ProgressiveBatchSchedule
    with pytest.raises(OptionError, match="run train.py for progressive training"):
        schedule_from_options(_opt(), progressive=False)

# ------------------------------------------------------------------ DeblurPairedDataset
def _deblur_opt(root, phase="val", **kw):
    opt = {"name": "D", "type": "DeblurPairedDataset", "phase": phase, "dataroot_gt": str(root / "gt"),
           "dataroot_lq": str(root / "lq"), "io_backend": {"type": "disk"}}
    if phase == "train":
        opt.update(gt_size=16, geometric_augs=True, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt.update(kw)
    return opt


def _write_pairs(root, stems=("a", "b", "c"), size=(20, 24)):
    from DiffIR.utils.hdr_io import write_ldr

    rng = np.random.default_rng(0)
    for s in stems:
        sharp = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        write_ldr(root / "gt" / f"{s}.png", sharp)
        write_ldr(root / "lq" / f"{s}.png", (sharp // 2).astype(np.uint8))
    return root


def test_deblur_dataset_pairs_by_name_and_returns_rgb_in_0_1(tmp_path):
    from DiffIR.utils.hdr_io import read_ldr

    root = _write_pairs(tmp_path)
    val = build_dataset(_deblur_opt(root))
    assert len(val) == 3 and set(val[0]) == {"lq", "gt", "lq_path", "gt_path"}
    it = val[1]
    assert it["gt_path"].endswith("gt/b.png") and it["lq_path"].endswith("lq/b.png")
    assert it["gt"].shape == (3, 20, 24) and it["gt"].dtype == torch.float32
    np.testing.assert_array_equal(it["gt"].numpy().transpose(1, 2, 0), read_ldr(root / "gt" / "b.png"))
    tr = build_dataset(_deblur_opt(root, "train", mini_batch_sizes=[2, 1], iters=[1, 1], gt_sizes=[8, 16]))
    for i in range(3):
        x = tr[i]
        assert x["lq"].shape == x["gt"].shape == (3, 16, 16)
        assert 0 <= float(x["lq"].min()) and float(x["gt"].max()) <= 1
    big = build_dataset(_deblur_opt(root, "train", gt_size=32))  # 20 x 24 images: reflect-padded patch
    assert big[0]["gt"].shape == (3, 32, 32)
    os.rename(root / "lq" / "a.png", root / "lq" / "a_blur.png")  # BasicSR's filename_tmpl maps GT to LQ stems
    os.rename(root / "lq" / "b.png", root / "lq" / "b_blur.png")
    os.rename(root / "lq" / "c.png", root / "lq" / "c_blur.png")
    assert build_dataset(_deblur_opt(root, filename_tmpl="{}_blur"))[0]["lq_path"].endswith("a_blur.png")


def test_deblur_dataset_errors_name_the_file_or_key(tmp_path):
    from DiffIR.data.pairing import PairingError
    from DiffIR.utils.hdr_io import write_ldr

    root = _write_pairs(tmp_path, stems=("a", "b", "c"))
    (root / "lq" / "c.png").unlink()
    with pytest.raises(PairingError) as e:
        build_dataset(_deblur_opt(root))
    assert "c.png" in str(e.value) and "dataroot_gt" in str(e.value) and "dgain" not in str(e.value)
    with pytest.raises(OptionError, match=r"dataroot_lq' = '.*nowhere' does not exist"):
        build_dataset(_deblur_opt(root, dataroot_lq=str(tmp_path / "nowhere")))
    with pytest.raises(OptionError, match="did you mean 'gt_size'"):
        build_dataset(_deblur_opt(root, "train", gt_szie=16))
    with pytest.raises(OptionError, match="dataroot_gt' is missing"):
        build_dataset({k: v for k, v in _deblur_opt(root).items() if k != "dataroot_gt"})
    with pytest.raises(OptionError, match="max_blurr"):
        build_dataset(_deblur_opt(root, synthetic={"max_blurr": 3}))
    # checked when the dataset is built, i.e. before training: sizes, unreadable files
    from DiffIR.data.check_report import DatasetCheckError

    write_ldr(root / "lq" / "c.png", np.zeros((20, 26, 3), np.uint8))  # partner back, but of another size
    with pytest.raises(DatasetCheckError) as e:
        build_dataset(_deblur_opt(root))
    assert "c.png" in str(e.value) and "20x26" in str(e.value) and "20x24" in str(e.value)
    write_ldr(root / "lq" / "c.png", np.zeros((20, 24, 3), np.uint8))
    data = (root / "gt" / "b.png").read_bytes()
    (root / "gt" / "b.png").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DatasetCheckError, match=r"gt/b\.png"):
        build_dataset(_deblur_opt(root, check_cache_dir=str(tmp_path / "cache")))


def test_deblur_synthetic_pairs_are_generated_once_and_blurred(tmp_path, monkeypatch):
    from DiffIR.metrics.psnr_ssim import calculate_psnr
    from DiffIR.utils.hdr_io import read_ldr

    monkeypatch.setattr(logging.getLogger("DiffIR"), "handlers", [])
    syn = {"num_images": 3, "size": 40, "seed": 2, "max_blur": 9}
    opt = _deblur_opt(tmp_path, synthetic=syn)
    ds = build_dataset(opt)
    assert len(ds) == 3 and ds[0]["gt"].shape == (3, 40, 40)
    mtime = os.path.getmtime(tmp_path / "gt" / "im_000001.png")
    assert len(build_dataset(opt)) == 3 and os.path.getmtime(tmp_path / "gt" / "im_000001.png") == mtime
    for i in (1, 2, 3):
        sharp, blurred = (read_ldr(tmp_path / d / f"im_{i:06d}.png") for d in ("gt", "lq"))
        assert 12 < calculate_psnr(blurred * 255, sharp * 255) < 45  # blurred, but the same scene
    assert len(build_dataset({**opt, "synthetic": {**syn, "num_images": 4}})) == 4  # new config: regenerated


def _write_basicsr_image_lmdb(folder, root, sub):
    """A BasicSR-style image LMDB (PNG bytes under the stem, ``meta_info.txt`` lines 'name.png (h,w,c) 1')."""
    import cv2
    import lmdb

    env = lmdb.open(str(folder), map_size=1 << 24)
    lines = []
    with env.begin(write=True) as txn:
        for f in sorted((root / sub).glob("*.png")):
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            txn.put(f.stem.encode(), cv2.imencode(".png", img)[1].tobytes())
            lines.append(f"{f.name} ({img.shape[0]},{img.shape[1]},{img.shape[2]}) 1")
    env.close()
    (folder / "meta_info.txt").write_text("\n".join(lines) + "\n")


def test_deblur_dataset_reads_basicsr_lmdbs_through_the_shared_readers(tmp_path):
    pytest.importorskip("lmdb")
    root = _write_pairs(tmp_path / "png")
    for sub in ("gt", "lq"):
        _write_basicsr_image_lmdb(tmp_path / f"{sub}.lmdb", root, sub)
    disk = build_dataset(_deblur_opt(root))
    db = build_dataset(_deblur_opt(root, dataroot_gt=str(tmp_path / "gt.lmdb"), dataroot_lq=str(tmp_path / "lq.lmdb"),
                                   io_backend={"type": "lmdb"}))
    assert len(db) == len(disk) == 3 and db.reader.backend == "lmdb"
    for i in range(3):
        torch.testing.assert_close(db[i]["gt"], disk[i]["gt"], rtol=0, atol=0)
        torch.testing.assert_close(db[i]["lq"], disk[i]["lq"], rtol=0, atol=0)
    tr = build_dataset(_deblur_opt(root, "train", dataroot_gt=str(tmp_path / "gt.lmdb"),
                                   dataroot_lq=str(tmp_path / "lq.lmdb"), io_backend={"type": "lmdb"}))
    assert tr[0]["lq"].shape == (3, 16, 16)


def test_deblur_loader_batches_work_with_the_schedule(tmp_path):
    root = _write_pairs(tmp_path, stems=tuple("abcd"))
    opt = _deblur_opt(root, "train", batch_size_per_gpu=4)
    loader = build_dataloader(build_dataset(opt), opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batch = next(iter(loader))
    out = _schedule(batch=4, gt_size=16, mini=(2,), iters=(1,), sizes=(8,), total=1)(batch, 1)
    assert out["lq"].shape == out["gt"].shape == (2, 3, 8, 8) and len(out["lq_path"]) == 2
    assert [p.replace("/lq/", "/gt/") for p in out["lq_path"]] == out["gt_path"]


# ------------------------------------------------------------------ option files
def _check_dataset_and_schedule(opt):
    from DiffIR.data.deblur_paired_dataset import DeblurPairedDataset

    for phase, dopt in opt["datasets"].items():
        assert dopt["type"] == "DeblurPairedDataset"
        DeblurPairedDataset.check_options(dopt, f"datasets:{phase}")
    return ProgressiveBatchSchedule.from_options(opt)


@pytest.mark.parametrize("name", ["train_DiffIRS1.yml", "demo_deblur_DiffIRS1.yml", "train_DiffIRS2.yml"])
def test_option_files_validate(name, tmp_path):
    import DiffIR.models  # noqa: F401  (registers the model classes)
    from DiffIR.config.loading import finalize_options, load_yaml
    from DiffIR.utils.registry import MODEL_REGISTRY

    opt = load_yaml(str(ROOT / "options" / name))
    s = _check_dataset_and_schedule(opt)
    if name.startswith("train_"):
        assert s.batch_size == 8 and s.gt_size == 512 and s.gt_sizes == [192, 256, 320, 384, 464, 512]
        assert s.mini_batch_sizes == [8, 4, 2, 2, 1, 1] and s.boundaries[-1] == opt["train"]["total_iter"]
    else:
        assert s.num_stages >= 2 and s.boundaries[-1] == opt["train"]["total_iter"]
    if opt["model_type"] not in MODEL_REGISTRY:
        pytest.skip(f"{opt['model_type']} is not registered yet (issue 5): only the datasets and schedule were checked")
    finalize_options(opt, str(tmp_path), is_train=True, file=name)
    assert opt["datasets"]["train"]["phase"] == "train"
    if name == "train_DiffIRS2.yml":  # the model accepts every train/path key of the file (official sizes)
        from DiffIR.archs import build_network
        from DiffIR.models import build_model
        from DiffIR.utils.checkpoint import atomic_save

        s1 = build_network(opt["network_S1"], "network_S1")  # stands in for the trained stage 1
        ckpt = str(tmp_path / "net_g_latest.pth")
        atomic_save({"params": s1.state_dict(), "params_ema": s1.state_dict()}, ckpt)
        opt["path"]["pretrain_network_g"] = opt["path"]["pretrain_network_S1"] = ckpt
        opt["dist"], opt["rank"], opt["world_size"] = False, 0, 1
        assert type(build_model(opt)).__name__ == "DiffIRS2Model"


# ------------------------------------------------------------------ real runs through train.py's pipeline
def _run_options(tmp_path, name, total_iter=6, **train_data):
    data = tmp_path / "data"
    train = {"name": "T", "type": "DeblurPairedDataset", "dataroot_gt": str(data / "tr/gt"),
             "dataroot_lq": str(data / "tr/lq"), "synthetic": {"num_images": 4, "size": 24, "seed": 3, "max_blur": 5},
             "io_backend": {"type": "disk"}, "geometric_augs": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 2,
             "gt_size": 16, "mini_batch_sizes": [2, 1], "iters": [4, 2], "gt_sizes": [8, 16], "use_shuffle": True,
             "dataset_enlarge_ratio": 1}
    train.update(train_data)
    opt = {
        "name": name, "model_type": "DiffIRS1Model", "scale": 1, "num_gpu": 0, "manual_seed": 0,
        "datasets": {
            "train": train,
            "val": {"name": "V", "type": "DeblurPairedDataset", "dataroot_gt": str(data / "va/gt"),
                    "dataroot_lq": str(data / "va/lq"), "synthetic": {"num_images": 1, "size": 24, "seed": 4},
                    "io_backend": {"type": "disk"}},
        },
        "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": None, "param_key_g": "params_ema", "strict_load_g": True},
        "train": {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "CosineAnnealingRestartCyclicLR", "periods": [4, 2], "restart_weights": [1, 1],
                                "eta_mins": [5e-4, 1e-5]},
                  "total_iter": total_iter, "warmup_iter": -1,
                  "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}},
        "val": {"val_freq": 3, "save_img": False,
                "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}}},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 3, "use_tb_logger": False},
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt))
    return path


@pytest.fixture
def fed(monkeypatch):
    """(iteration, lq shape, gt shape) of every batch the schedule hands to the model."""
    record = []
    real = ProgressiveBatchSchedule.__call__

    def spy(self, batch, current_iter):
        out = real(self, batch, current_iter)
        record.append((current_iter, tuple(out["lq"].shape), tuple(out["gt"].shape)))
        return out

    monkeypatch.setattr(ProgressiveBatchSchedule, "__call__", spy)
    return record


def test_short_run_crosses_a_stage_boundary(tmp_path, fed):
    from DiffIR.train_pipeline import train_pipeline

    out = train_pipeline(str(tmp_path), ["-opt", str(_run_options(tmp_path, "prog"))])
    assert out["iter"] == 6
    stage1, stage2 = ((2, 3, 8, 8),) * 2, ((1, 3, 16, 16),) * 2
    assert fed == [(i, *(stage1 if i <= 4 else stage2)) for i in range(1, 7)]
    log = log_text(tmp_path, "prog")
    assert "Progressive training (the loader delivers batches of 2 patches of 16x16; total iterations 6)" in log
    assert "stage 1: iterations 1-4, batch size per gpu 2, patch size 8" in log
    assert log.count("Progressive training stage 1/2 (iterations 1-4)") == 1
    assert log.count("Progressive training stage 2/2 (iterations 5-6): updating patch size to 16 and batch size per "
                     "gpu to 1") == 1
    assert "Number of train images: 4" in log and "l_pix:" in log and "# psnr:" in log
    assert "Final quality (val set V, psnr)" in log and out["results"]["V"]["psnr"] > 0
    # validation previews of an sRGB task show the images as they are (no HDR tone map)
    grid = cv2.imread(str(tmp_path / "experiments" / "prog" / "visualization" / "V" / "preview_6.png"))
    lq = cv2.imread(glob.glob(str(tmp_path / "data" / "va" / "lq" / "*"))[0])
    assert grid.shape == (24, 4 * 24, 3) and np.array_equal(grid[:, :24], lq)


def test_auto_resume_continues_inside_the_right_stage_and_matches_an_uninterrupted_run(tmp_path, fed):
    from DiffIR.train_pipeline import train_pipeline
    from DiffIR.utils.checkpoint import load_file

    train_pipeline(str(tmp_path), ["-opt", str(_run_options(tmp_path, "full"))])
    whole = list(fed)
    fed.clear()
    yml = _run_options(tmp_path, "cut")
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "train:total_iter=3"])  # stops in stage 1
    assert [f[0] for f in fed] == [1, 2, 3]
    fed.clear()
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume"])
    assert out["iter"] == 6
    assert fed == whole[3:]  # iteration 4 still in stage 1, 5 and 6 in stage 2
    log = log_text(tmp_path, "cut")
    assert "Resuming from training state" in log and "iter 3" in log
    assert "Progressive training stage 1/2 (iterations 1-4)" in log and "Progressive training stage 2/2" in log
    # the random subsets and windows after the resume are those of the uninterrupted run: same weights
    a = load_file(str(tmp_path / "experiments" / "full" / "models" / "net_g_6.pth"))
    b = load_file(str(tmp_path / "experiments" / "cut" / "models" / "net_g_6.pth"))
    for key in ("params", "params_ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


@pytest.mark.slow
def test_cli_reports_a_bad_progressive_option_in_one_line(tmp_path):
    yml = _run_options(tmp_path, "cli", gt_sizes=[8, 32])
    proc = run_entry(tmp_path, "train.py", "-opt", str(yml))
    assert proc.returncode == 2, proc.stderr
    assert "ERROR:" in proc.stderr and "gt_sizes[1]' = 32 is larger than" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "experiments" / "cli" / "models").exists()  # nothing started
