"""LDR_HDR_PairedDataset, dgain files, transforms, synthetic data, loaders and samplers."""
import json
import logging
import os
import shutil
import time

import numpy as np
import pytest
import torch

import DiffIR.data.synthetic_hdr as synthetic_hdr
from DiffIR.data import EnlargedSampler, build_dataloader, build_dataset
from DiffIR.data.dgain import format_dgain_text, parse_dgain_text, read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import DatasetCheckError, LDR_HDR_PairedDataset, PairingError
from DiffIR.data.generated_folder import MARKER_NAME
from DiffIR.data.synthetic_hdr import ensure_synthetic_dataset, generate_dataset, generate_hdr_scene, generate_pair
from DiffIR.data.transforms import augment_pair, img2tensor, paired_random_crop, random_window
from DiffIR.utils.hdr_io import read_hdr, read_ldr, write_hdr
from DiffIR.utils.image_common import Window, resolve_window
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import ldr_to_hdr, log_tone_map

from helpers import folder_set_options, make_hdr_folder

H, W = 40, 48


def _make_folder(root, **kw):
    """Small deterministic AIM-ITM style folders: lq/ (.png), gt/ (.hdr), dg/."""
    return make_hdr_folder(root, **{"size": (H, W), "gt_ext": ".hdr", "lq_ext": ".png", "log10_range": (-1, 3),
                                    "strategy": "test", **kw})


_opt = folder_set_options


# ------------------------------------------------------------------ dgain files
def test_dgain_file_parsing(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("# comment\n\ndgain: 2.5\nstrategy: sksldrlogtohdrlog\nPSNR: 41.2\nno colon here\nGamma : 2.2\n")
    assert read_dgain_file(p) == {"dgain": 2.5, "gamma": 2.2}
    assert parse_dgain_text(format_dgain_text(1.234567, 2.0, rule="key")) == {"dgain": 1.234567, "gamma": 2.0}
    assert parse_dgain_text("dgain: 3\n", defaults={"dgain": 1.0, "gamma": 1.6}) == {"dgain": 3.0, "gamma": 1.6}


@pytest.mark.parametrize("text, key, words", [
    ("dgain: 2.0\n", "gamma", "no 'gamma:' line"),
    ("gamma: 2.0\n", "dgain", "no 'dgain:' line"),
    ("dgain: abc\ngamma: 2\n", "dgain", "not a number"),
    ("dgain: 2\ngamma: 0\n", "gamma", "> 0"),
    ("dgain: -1\ngamma: 2\n", "dgain", "> 0"),
    ("dgain: nan\ngamma: 2\n", "dgain", "not a number"),
    ("dgain: 1e400\ngamma: 2\n", "dgain", "finite"),
])
def test_dgain_file_errors_name_file_and_key(tmp_path, text, key, words):
    p = tmp_path / "bad_file.txt"
    p.write_text(text)
    with pytest.raises(ValueError) as ei:
        read_dgain_file(p)
    msg = str(ei.value)
    assert "bad_file.txt" in msg and f"'{key}" in msg and words in msg, msg


def test_dgain_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_dgain_file(tmp_path / "nothere.txt")


# ------------------------------------------------------------------ transforms
def test_paired_random_crop_same_window_and_padding():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lq = np.stack([yy, xx, yy + xx], -1)
    gt = lq * 10
    for _ in range(10):
        a, b = paired_random_crop(lq, gt, 16, rng)
        assert a.shape == (16, 16, 3) and b.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(a * 10, b)
    # smaller than the patch: reflect-padded at the bottom/right
    small = lq[:10, :12]
    a, b = paired_random_crop(small, small * 10, (16, 20), rng)
    assert a.shape == (16, 20, 3)
    np.testing.assert_array_equal(a[:10, :12], small)  # only possible window: top-left
    np.testing.assert_array_equal(a[10, :12], small[8])  # reflection without repeating the edge row
    np.testing.assert_array_equal(a[:10, 12], small[:, 10])
    a, _ = paired_random_crop(lq[:1, :5], lq[:1, :5], 4, rng)  # 1-pixel axis: edge-replicated
    assert a.shape == (4, 4, 3)
    with pytest.raises(ValueError, match="differ in size"):
        paired_random_crop(lq, gt[:-1], 8, rng)


def test_random_window_is_the_crop_of_paired_random_crop_and_windows_are_bounds_checked():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([yy, xx, yy + xx], -1)
    for seed in range(5):
        win = random_window(np.random.default_rng(seed), H, W, 16, 12)
        assert 0 <= win.top <= H - 16 and 0 <= win.left <= W - 12 and (win.height, win.width) == (16, 12)
        a, _ = paired_random_crop(img, img, (16, 12), np.random.default_rng(seed))
        np.testing.assert_array_equal(a, win.crop(img))
    # an axis shorter than the crop: the window covers it from 0 (the caller pads it)
    assert random_window(np.random.default_rng(0), 10, W, 16, 16)[::2] == (0, 10)
    assert resolve_window(lambda h, w: (h - 2, w - 3, 2, 3), 8, 9, "x") == Window(6, 6, 2, 3)
    assert resolve_window(None, 8, 9, "x") is None
    for bad in ((7, 0, 2, 2), (0, -1, 2, 2), (0, 0, 0, 2)):
        with pytest.raises(ValueError, match="lies outside image 'x' of 8x9"):
            resolve_window(bad, 8, 9, "x")


def test_augment_pair_applies_one_variant_to_all():
    rng = np.random.default_rng(1)
    img = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    seen = set()
    for _ in range(64):
        a, b = augment_pair([img, img * 2], rng)
        np.testing.assert_array_equal(a * 2, b)
        seen.add(a.tobytes())
    assert len(seen) == 8
    rot_only = {augment_pair([img], rng, hflip=False)[0].shape for _ in range(32)}
    assert rot_only == {(5, 7, 3), (7, 5, 3)}
    t = img2tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32 and t.is_contiguous()
    assert torch.equal(t[1], torch.from_numpy(img[..., 1]))


# ------------------------------------------------------------------ pairing and errors
def test_pairing_by_stem_and_val_items(tmp_path):
    root = _make_folder(tmp_path)
    ds = build_dataset(_opt(root))
    assert len(ds) == 3
    for i, s in enumerate("abc"):
        item = ds[i]
        assert [os.path.basename(item[k]) for k in ("lq_path", "gt_path", "dgain_path")] == [f"{s}.png", f"{s}.hdr", f"{s}.txt"]
        assert item["lq"].shape == item["gt"].shape == (3, H, W)
        assert item["lq"].dtype == item["gt"].dtype == torch.float32
        assert item["dgain"].dtype == torch.float32 and item["dgain"].ndim == 0 and float(item["dgain"]) == 1.0 + i
        assert float(item["gamma"]) == pytest.approx(2.2)
        hdr = read_hdr(item["gt_path"])
        np.testing.assert_allclose(item["gt"].numpy(), log_tone_map(hdr).transpose(2, 0, 1), rtol=1e-6)
        lin = ldr_to_hdr(read_ldr(item["lq_path"]), 1.0 + i, 2.2)
        np.testing.assert_allclose(item["lq"].numpy(), log_tone_map(lin).transpose(2, 0, 1), rtol=1e-6, atol=1e-7)
        assert 0 <= float(item["lq"].min()) and float(item["lq"].max()) <= 1.0


def test_filename_template_maps_gt_stem_to_lq_stem(tmp_path):
    root = _make_folder(tmp_path, stems=("x",))
    os.rename(root / "lq" / "x.png", root / "lq" / "x_lq.png")
    os.rename(root / "dg" / "x.txt", root / "dg" / "x_lq.txt")
    ds = build_dataset(_opt(root, filename_tmpl="{}_lq"))
    assert os.path.basename(ds[0]["gt_path"]) == "x.hdr" and os.path.basename(ds[0]["lq_path"]) == "x_lq.png"


def test_missing_partners_reported_once_with_counts_and_names(tmp_path):
    root = _make_folder(tmp_path, stems=("a", "b", "c", "d"))
    os.remove(root / "gt" / "a.hdr")
    os.remove(root / "lq" / "b.png")
    os.remove(root / "lq" / "c.png")
    os.remove(root / "dg" / "d.txt")
    with pytest.raises(PairingError) as ei:
        build_dataset(_opt(root))
    msg = str(ei.value)
    assert "2 file(s) in dataroot_gt" in msg and "b.hdr, c.hdr" in msg
    assert "1 file(s) in dataroot_lq" in msg and "a.png" in msg
    assert "1 pair(s) have no dgain file" in msg and "d.txt" in msg and "Fix" in msg


def test_empty_or_missing_folder_names_the_option_key(tmp_path):
    root = _make_folder(tmp_path)
    opt = _opt(root, dataroot_gt=str(tmp_path / "nowhere"))
    with pytest.raises(OptionError, match=r"dataroot_gt' = '.*nowhere' does not exist"):
        build_dataset(opt)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(OptionError, match=r"dataroot_lq' = '.*empty' holds no \.jpg/\.jpeg/\.png files.*readme\.md"):
        build_dataset(_opt(root, dataroot_lq=str(tmp_path / "empty")))


def test_size_mismatch_names_both_files(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    write_hdr(root / "gt" / "a.hdr", np.ones((H, W + 2, 3), np.float32))
    with pytest.raises(DatasetCheckError) as ei:  # found from the headers when the dataset is built
        build_dataset(_opt(root, check="quick", check_cache_dir=False))
    msgs = [str(ei.value)]
    for phase in ("val", "train"):  # and when an item is read with the checks off
        ds = build_dataset(_opt(root, phase=phase, check="off"))
        with pytest.raises(ValueError) as ei:
            ds[0]
        msgs.append(str(ei.value))
    for msg in msgs:
        assert "a.png" in msg and "a.hdr" in msg and f"{H}x{W}" in msg and f"{H}x{W + 2}" in msg, msg


def test_generic_paired_dataset_has_its_own_module_and_the_old_import_path_still_works():
    import ast
    import importlib

    generic = importlib.import_module("DiffIR.data.paired_image_dataset")
    hdr = importlib.import_module("DiffIR.data.ldr_hdr_paired_dataset")
    deblur = importlib.import_module("DiffIR.data.deblur_paired_dataset")
    assert hdr.PairedImageDataset is generic.PairedImageDataset and hdr.DiskPairReader is generic.DiskPairReader
    assert issubclass(LDR_HDR_PairedDataset, generic.PairedImageDataset)
    assert issubclass(deblur.DeblurPairedDataset, generic.PairedImageDataset)
    # the deblurring dataset knows nothing of the HDR one
    tree = ast.parse(open(deblur.__file__, encoding="utf-8").read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "DiffIR.data.ldr_hdr_paired_dataset" not in imported and "DiffIR.data.paired_image_dataset" in imported


def test_option_errors(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    with pytest.raises(OptionError) as ei:
        build_dataset(_opt(root, phase="train", gt_szie=64))
    assert "gt_szie" in str(ei.value) and "did you mean 'gt_size'" in str(ei.value)
    with pytest.raises(OptionError, match="(?i)did you mean 'LDR_HDR_PairedDataset'.*Fix"):
        build_dataset(_opt(root, type="LDR_HDR_PairDataset"))
    with pytest.raises(OptionError, match="num_imgs"):
        build_dataset(_opt(root, synthetic={"num_imgs": 3}))
    with pytest.raises(OptionError, match="tone_curve"):
        build_dataset(_opt(root, tone_curve="gamma"))
    with pytest.raises(OptionError, match="gt_size"):
        build_dataset({k: v for k, v in _opt(root, phase="train").items() if k != "gt_size"})
    with pytest.raises(OptionError, match=r"dataroot_lq' = .*is not an LMDB folder.*create_lmdb_hdr\.py"):
        build_dataset(_opt(root, io_backend={"type": "lmdb"}))
    with pytest.raises(OptionError, match="check' = 'fast' is unknown"):
        build_dataset(_opt(root, check="fast"))
    with pytest.raises(OptionError, match="small_images"):
        build_dataset(_opt(root, small_images="crop"))
    with pytest.raises(OptionError, match="prefetch_mode"):
        build_dataset(_opt(root, prefetch_mode="gpu"))
    with pytest.raises(OptionError, match="did you mean 'disk'"):
        build_dataset(_opt(root, io_backend={"type": "dsik"}))
    keys = set(LDR_HDR_PairedDataset.OPTION_KEYS)
    assert {"dataroot_lq", "dataroot_gt", "dataroot_dgain", "filename_tmpl", "io_backend", "gt_size", "geometric_augs",
            "use_shuffle", "num_worker_per_gpu", "batch_size_per_gpu", "dataset_enlarge_ratio", "prefetch_mode",
            "hdr_max", "tone_curve", "lq_linearize", "synthetic", "meta_info_file", "persistent_workers",
            "check", "check_cache_dir", "small_images", "num_prefetch_queue", "pin_memory"} <= keys


# ------------------------------------------------------------------ training crops, tone options
def test_train_crops_padding_and_ranges(tmp_path):
    root = _make_folder(tmp_path, stems=("a", "b"))
    ds = build_dataset(_opt(root, phase="train"))
    for i in range(2):
        it = ds[i]
        assert it["lq"].shape == it["gt"].shape == (3, 32, 32)
        assert 0 <= float(it["lq"].min()) and float(it["lq"].max()) <= 1
        assert 0 <= float(it["gt"].min()) and float(it["gt"].max()) <= 1
    big = build_dataset(_opt(root, phase="train", gt_size=64))  # image is 40x48: padded
    assert big[0]["gt"].shape == (3, 64, 64)


def test_crop_happens_before_tone_mapping_and_window_matches(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    val = build_dataset(_opt(root))[0]
    tr = build_dataset(_opt(root, phase="train", gt_size=16, geometric_augs=False))
    for _ in range(5):
        it = tr[0]
        g, q = val["gt"].numpy(), val["lq"].numpy()
        # locate the GT patch in the full image and check the LQ patch comes from the same window
        hits = [(y, x) for y in range(H - 15) for x in range(W - 15)
                if np.array_equal(g[:, y:y + 16, x:x + 16], it["gt"].numpy())]
        assert len(hits) == 1
        y, x = hits[0]
        np.testing.assert_array_equal(q[:, y:y + 16, x:x + 16], it["lq"].numpy())


def test_tone_curve_options_and_negative_gt(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    hdr = read_hdr(root / "gt" / "a.hdr")
    hdr[0, 0] = -3.0
    write_hdr(root / "gt" / "a.exr", hdr)
    os.remove(root / "gt" / "a.hdr")
    lin = build_dataset(_opt(root, tone_curve="linear", lq_linearize=False, hdr_max=500.0))[0]
    np.testing.assert_allclose(lin["gt"].numpy(), np.maximum(hdr, 0).transpose(2, 0, 1) / 500.0, rtol=1e-6)
    assert float(lin["gt"][:, 0, 0].max()) == 0.0
    np.testing.assert_allclose(lin["lq"].numpy(), read_ldr(root / "lq" / "a.png").transpose(2, 0, 1))


# ------------------------------------------------------------------ synthetic data
def test_generate_pair_inverse_recovers_unclipped_hdr_within_8bit_bound():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        hdr, ldr8, dgain, gamma = generate_pair(rng, 64, 80, noise=False, jpeg=False)
        assert hdr.dtype == np.float32 and hdr.shape == (64, 80, 3) and ldr8.dtype == np.uint8
        assert 1.0 <= dgain <= 64.0 and 1.6 <= gamma <= 2.6
        assert 1e-3 <= hdr.min() and hdr.max() <= 1000.0
        _check_inverse_bound(hdr.astype(np.float64), ldr8.astype(np.float64) / 255.0, dgain, gamma)


def _check_inverse_bound(hdr, ldr, dgain, gamma):
    mask = hdr * dgain / 1000.0 < 0.95
    assert mask.mean() > 0.5
    rec = ldr_to_hdr(ldr, dgain, gamma, 1000.0)
    xi = np.minimum(ldr + 0.5 / 255.0, 1.0)  # the derivative grows with ldr (gamma > 1): bound it at the top
    bound = 1000.0 / dgain * gamma * xi ** (gamma - 1.0) * (0.5 / 255.0)
    err = np.abs(rec - hdr)
    assert np.all(err[mask] <= bound[mask] * 1.001 + 1e-4), float((err - bound)[mask].max())


def test_generate_dataset_writes_a_consistent_set_and_inverse_holds(tmp_path):
    dirs = [tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dgain_info"]
    generate_dataset(*dirs, num_images=3, size=(48, 56), seed=5, gt_format="exr", ldr_format="png", noise=False)
    stems = [sorted(p.stem for p in d.iterdir()) for d in dirs]
    assert stems[0] == stems[1] == stems[2] == ["im_000001", "im_000002", "im_000003"]
    for s in stems[0]:
        hdr = read_hdr(dirs[1] / f"{s}.exr")
        ldr = read_ldr(dirs[0] / f"{s}.png")
        info = read_dgain_file(dirs[2] / f"{s}.txt")
        assert hdr.shape == ldr.shape == (48, 56, 3)
        _check_inverse_bound(hdr.astype(np.float64), ldr.astype(np.float64), info["dgain"], info["gamma"])
    # image i does not depend on num_images
    generate_dataset(*(tmp_path / "two" / d.name for d in dirs), num_images=1, size=(48, 56), seed=5,
                     gt_format="exr", ldr_format="png", noise=False)
    np.testing.assert_array_equal(read_hdr(tmp_path / "two" / "hdr" / "im_000001.exr"), read_hdr(dirs[1] / "im_000001.exr"))


def test_generation_speed(tmp_path):
    t0 = time.perf_counter()
    generate_dataset(tmp_path / "l", tmp_path / "g", tmp_path / "d", num_images=32, size=256, seed=0)
    dt = time.perf_counter() - t0
    assert len(os.listdir(tmp_path / "g")) == 32
    assert dt < 20.0, f"32 images of 256x256 took {dt:.1f}s"


def test_scene_statistics_cover_a_wide_dynamic_range():
    hdr = generate_hdr_scene(np.random.default_rng(3), 128, 128)
    lum = hdr @ np.float32([0.2126, 0.7152, 0.0722])
    assert lum.max() > 500 and lum.max() / max(lum.min(), 1e-3) > 100
    assert 5 < np.median(lum) < 400


def test_dataset_generates_synthetic_data_on_first_use(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger("DiffIR"), "handlers", [])  # unconfigured logger: message is printed
    root = tmp_path / "syn"
    syn = {"num_images": 4, "size": 40, "seed": 1}
    opt = {"name": "S", "type": "LDR_HDR_PairedDataset", "phase": "val", "dataroot_lq": str(root / "jpg"),
           "dataroot_gt": str(root / "hdr"), "dataroot_dgain": str(root / "dgain_info"), "synthetic": syn}
    ds = build_dataset(opt)
    assert "Generating synthetic" in capsys.readouterr().out
    assert len(ds) == 4 and ds[0]["gt"].shape == (3, 40, 40)
    markers = [json.loads((root / d / MARKER_NAME).read_text()) for d in ("jpg", "hdr", "dgain_info")]
    assert len({m["generation_id"] for m in markers}) == 1
    mtime = os.path.getmtime(root / "hdr" / "im_000001.hdr")
    ds2 = build_dataset(opt)  # complete: nothing regenerated
    assert "Generating" not in capsys.readouterr().out and len(ds2) == 4
    assert os.path.getmtime(root / "hdr" / "im_000001.hdr") == mtime
    assert not [p for p in root.iterdir() if p.name.startswith(".") and "partial" in p.name]
    # a changed configuration regenerates the (generator-owned) folders
    ds3 = build_dataset({**opt, "synthetic": {**syn, "num_images": 5}})
    assert len(ds3) == 5


def test_interrupted_generation_is_never_used(tmp_path, monkeypatch):
    dirs = [tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dg"]
    real = synthetic_hdr.generate_dataset

    def crash(*args, **kwargs):
        real(*args, **{**kwargs, "num_images": 1})
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(synthetic_hdr, "generate_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(*dirs, num_images=3, size=24, seed=0, log=None)
    assert not any(d.exists() for d in dirs) and list(tmp_path.iterdir()) == [tmp_path / ".hdr.synthetic.lock"]
    monkeypatch.setattr(synthetic_hdr, "generate_dataset", real)
    # a crash between the renames leaves marked folders from another generation: regenerated
    assert ensure_synthetic_dataset(*dirs, num_images=3, size=24, seed=0, log=None)
    marker = json.loads((dirs[0] / MARKER_NAME).read_text())
    marker["generation_id"] = "stale"
    (dirs[0] / MARKER_NAME).write_text(json.dumps(marker))
    shutil.rmtree(dirs[2])
    assert ensure_synthetic_dataset(*dirs, num_images=3, size=24, seed=0, log=None)
    assert len(os.listdir(dirs[2])) == 4  # 3 txt + marker
    assert not ensure_synthetic_dataset(*dirs, num_images=3, size=24, seed=0, log=None)


def test_synthetic_refuses_to_mix_with_user_data(tmp_path):
    (tmp_path / "hdr").mkdir()
    (tmp_path / "hdr" / "mine.hdr").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"dataroot_gt=.*hdr already hold files"):
        ensure_synthetic_dataset(tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dg", 2, 16, 0, log=None)
    assert (tmp_path / "hdr" / "mine.hdr").exists() and not (tmp_path / "jpg").exists()
    root = _make_folder(tmp_path / "real", stems=("a",))  # all three folders hold user data: used as is
    assert not ensure_synthetic_dataset(root / "lq", root / "gt", root / "dg", 2, 16, 0, log=None)


# ------------------------------------------------------------------ loaders and samplers
def test_dataloader_two_workers_batches_and_distinct_worker_rngs(tmp_path):
    root = _make_folder(tmp_path, stems=("a", "b", "c", "d"))
    opt = _opt(root, phase="train", gt_size=16, num_worker_per_gpu=2, batch_size_per_gpu=2)
    ds = build_dataset(opt)
    loader = build_dataloader(ds, opt, num_gpu=1, dist=False, sampler=None, seed=0)
    assert loader.batch_size == 2 and loader.num_workers == 2 and loader.drop_last and loader.persistent_workers
    batches = list(loader)
    assert len(batches) == 2
    for b in batches:
        assert b["lq"].shape == b["gt"].shape == (2, 3, 16, 16)
        assert b["dgain"].shape == b["gamma"].shape == (2,) and b["dgain"].dtype == torch.float32
        assert len(b["lq_path"]) == 2
    # the same item fetched by both workers must be cropped differently (per-worker RNG)
    always_a = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, sampler=[0] * 8)
    crops = [b["gt"] for b in always_a]
    assert not all(torch.equal(crops[i], crops[i + 1]) for i in range(0, 8, 2))
    val_opt = _opt(root)
    val_loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=1, dist=False)
    assert val_loader.batch_size == 1 and val_loader.num_workers == 0
    assert next(iter(val_loader))["gt"].shape == (1, 3, H, W)


def test_dataloader_option_errors(tmp_path):
    root = _make_folder(tmp_path, stems=("a",))
    opt = _opt(root, phase="train", batch_size_per_gpu=4)
    ds = build_dataset(opt)
    with pytest.raises(OptionError, match="batch size 4 is larger"):
        build_dataloader(ds, opt, num_gpu=1, dist=False)
    del opt["num_worker_per_gpu"]
    with pytest.raises(OptionError, match="num_worker_per_gpu"):
        build_dataloader(ds, opt, num_gpu=1, dist=False)


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_enlarged_sampler_shards_without_overlap():
    ds = _Sized(12)
    shards = [list(EnlargedSampler(ds, 3, r, 1)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert sorted(sum(shards, [])) == list(range(12))
    s = EnlargedSampler(ds, 3, 0, 1)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    assert list(s) != e1
    s.set_epoch(1)
    assert list(s) == e1
    big = [EnlargedSampler(_Sized(10), 4, r, 3) for r in range(4)]
    assert all(len(b) == 8 for b in big)  # ceil(10 * 3 / 4)
    counts = np.bincount(sum((list(b) for b in big), []), minlength=10)
    assert counts.sum() == 32 and counts.min() >= 3
    with pytest.raises(ValueError):
        EnlargedSampler(ds, 2, 2, 1)
