"""HDR data at scale: LMDB round trip and builds, meta_info_file, dataset checks and their cache,
per-sample seeding across workers/ranks/epochs, prefetchers, and the two scripts."""
import json
import logging
import os
import pickle
from dataclasses import replace

import lmdb
import numpy as np
import pytest
import torch

from DiffIR.data import EnlargedSampler, SampleIndex, build_dataloader, build_dataset, build_prefetcher, loader_options
from DiffIR.data.check_cache import CACHE_VERSION, CheckCache, DgainFacts, ImageFacts
from DiffIR.data.check_report import DatasetCheckError
from DiffIR.data.checks import CheckSettings, check_reader
from DiffIR.data.dgain import format_dgain_text
from DiffIR.data.lmdb_format import decode_hdr_record, encode_hdr_record, hdr_record_shape
from DiffIR.data.lmdb_writer import LmdbBuildError
from DiffIR.data.pairing import PairingError
from DiffIR.data.prefetcher import CPUPrefetcher, CUDAPrefetcher
from DiffIR.utils.hdr_io import read_hdr, write_hdr
from DiffIR.utils.errors import OptionError

from helpers import (build_lmdb, folder_set_options, import_scripts, make_hdr_folder, run_entry, short_run_options,
                     write_yaml)

H, W = 40, 48
F16_REL = 2.0 ** -11  # float16 rounding bound (relative), see DiffIR/data/lmdb_format.py


def _opt(root, phase="val", **kw):
    return folder_set_options(root, phase, train_crop=16, **kw)


def _lmdb_opt(out, root, phase="val", **kw):
    return _opt(root, phase, io_backend={"type": "lmdb"}, dataroot_lq=str(out / "lq.lmdb"),
                dataroot_gt=str(out / "gt.lmdb"), dataroot_dgain=str(out / "dgain.lmdb"), **kw)


# ------------------------------------------------------------------ LMDB
def test_hdr_record_format_and_window():
    img = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    rec = encode_hdr_record(img, "float32")
    assert rec[:4] == b"DHDR" and len(rec) == 16 + img.nbytes and hdr_record_shape(rec) == (5, 7, 3)
    np.testing.assert_array_equal(decode_hdr_record(rec), img)
    np.testing.assert_array_equal(decode_hdr_record(rec, window=(1, 2, 3, 4)), img[1:4, 2:6])
    half = decode_hdr_record(encode_hdr_record(img, "float16"))
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, img, rtol=F16_REL, atol=6e-8)
    with pytest.raises(OSError, match="truncated|holds"):
        decode_hdr_record(rec[:-4], "x")


@pytest.mark.parametrize("gt_ext, dtype", [(".exr", "float32"), (".exr", "float16"), (".hdr", "float16")])
def test_lmdb_round_trip_gives_the_disk_tensors(tmp_path, gt_ext, dtype):
    root = make_hdr_folder(tmp_path / "d", gt_ext=gt_ext)
    out = tmp_path / "lmdb"
    summary = build_lmdb(root, out, gt_dtype=dtype)
    assert summary["written"] == 3 and summary["complete"]
    for kind in ("lq", "gt", "dgain"):
        assert (out / f"{kind}.lmdb" / "meta_info.txt").is_file()
    assert (out / "gt.lmdb" / "meta_info.txt").read_text().splitlines()[0] == f"a ({H},{W},3) {dtype}"
    with lmdb.open(str(out / "lq.lmdb"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"a") == (root / "lq" / "a.jpg").read_bytes()  # the original JPEG bytes
    disk, db = build_dataset(_opt(root)), build_dataset(_lmdb_opt(out, root))
    assert len(db) == 3 and db.reader.backend == "lmdb"
    for i in range(3):
        a, b = disk[i], db[i]
        torch.testing.assert_close(b["lq"], a["lq"], rtol=0, atol=0)
        assert float(b["dgain"]) == float(a["dgain"]) and float(b["gamma"]) == float(a["gamma"])
        if dtype == "float32" or gt_ext == ".hdr":  # RGBE values are exact in float16
            torch.testing.assert_close(b["gt"], a["gt"], rtol=0, atol=0)
        else:  # log domain: |dT| <= 2^-11 * x / ((1 + x) ln 1001) < 7.1e-5
            torch.testing.assert_close(b["gt"], a["gt"], rtol=0, atol=7.1e-5)
    # training crops: same windows from the same per-sample seeds, for any number of workers
    tr_opt = dict(gt_size=16, num_worker_per_gpu=2)
    s_disk = EnlargedSampler(disk, 1, 0, 2, seed=7)
    crops = []
    for ds in (build_dataset(_opt(root, "train", **tr_opt)), build_dataset(_lmdb_opt(out, root, "train", **tr_opt))):
        loader = build_dataloader(ds, _opt(root, "train", **tr_opt), num_gpu=1, sampler=EnlargedSampler(ds, 1, 0, 2, seed=7),
                                  seed=0)
        loader.sampler.set_epoch(3)
        crops.append(torch.cat([b["gt"] for b in loader]))
    tol = 0 if dtype == "float32" or gt_ext == ".hdr" else 7.1e-5
    torch.testing.assert_close(crops[1], crops[0], rtol=0, atol=tol)
    assert len(s_disk) == 6


def test_lmdb_build_resumes_after_bad_input_and_refuses_to_mix(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", "d"), size=(64, 64))
    (root / "dg" / "c.txt").write_text("dgain: 2.0\n")  # no gamma
    out = tmp_path / "lmdb"
    with pytest.raises(LmdbBuildError) as ei:
        build_lmdb(root, out, initial_map_size=1 << 16)  # tiny map: it must grow
    msg = str(ei.value)
    assert "c.txt" in msg and "gamma" in msg and "run the same command again" in msg
    with pytest.raises(OptionError, match="unfinished build"):
        build_dataset(_lmdb_opt(out, root))
    (root / "dg" / "c.txt").write_text(format_dgain_text(2.0, 2.2))
    summary = build_lmdb(root, out)
    assert (summary["written"], summary["skipped"]) == (1, 3)
    assert len(build_dataset(_lmdb_opt(out, root))) == 4
    assert build_lmdb(root, out)["written"] == 0  # complete: nothing to do
    with pytest.raises(LmdbBuildError, match="other sources or options.*gt_dtype"):
        build_lmdb(root, out, gt_dtype="float16")
    make_hdr_folder(root, stems=("e",), size=(64, 64))
    with pytest.raises(LmdbBuildError, match="1 new"):
        build_lmdb(root, out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with lmdb.open(str(foreign / "gt.lmdb"), map_size=1 << 20) as env, env.begin(write=True) as txn:
        txn.put(b"a", b"x")
    with pytest.raises(LmdbBuildError, match="did not write"):
        build_lmdb(root, foreign)


def test_interrupted_lmdb_build_resumes(tmp_path, monkeypatch):
    import DiffIR.data.lmdb_writer as lmdb_writer

    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", "d"))
    calls = []
    real = lmdb_writer.read_hdr

    def crash_on_third(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lmdb_writer, "read_hdr", crash_on_third)
    out = tmp_path / "lmdb"
    with pytest.raises(KeyboardInterrupt):
        build_lmdb(root, out, batch_items=1, threads=1)
    with pytest.raises(OptionError, match="unfinished build"):
        build_dataset(_lmdb_opt(out, root))
    monkeypatch.setattr(lmdb_writer, "read_hdr", real)
    summary = build_lmdb(root, out, batch_items=1, threads=1)
    assert (summary["skipped"], summary["written"]) == (2, 2)
    disk, db = build_dataset(_opt(root)), build_dataset(_lmdb_opt(out, root))
    for i in range(4):
        torch.testing.assert_close(db[i]["gt"], disk[i]["gt"], rtol=0, atol=0)


def test_lmdb_build_reports_every_bad_pair(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c"))
    hdr = read_hdr(root / "gt" / "a.exr")
    hdr[0, 0, 0] = np.nan
    write_hdr(root / "gt" / "a.exr", hdr)
    write_hdr(root / "gt" / "b.exr", np.ones((H, W + 1, 3), np.float32))
    with pytest.raises(LmdbBuildError) as ei:
        build_lmdb(root, tmp_path / "o")
    msg = str(ei.value)
    assert "a.exr" in msg and "NaN" in msg and "b.exr" in msg and "Size mismatch" in msg and "other 1 pairs" in msg
    big = make_hdr_folder(tmp_path / "big", stems=("z",))
    write_hdr(big / "gt" / "z.exr", np.full((H, W, 3), 1e5, np.float32))
    with pytest.raises(LmdbBuildError, match="float16.*--gt-dtype float32"):
        build_lmdb(big, tmp_path / "o2", gt_dtype="float16")


def _fork_style_lmdb(root, out):
    """The origin fork's layout: JPEG bytes, pickled BGR HDR arrays, pickled dgain dicts, BasicSR meta_info."""
    stems = sorted(p.stem for p in (root / "gt").iterdir())
    out.mkdir(parents=True)
    for kind in ("lq", "gt", "dgain"):
        with lmdb.open(str(out / f"{kind}.lmdb"), map_size=1 << 26) as env, env.begin(write=True) as txn:
            for s in stems:
                if kind == "lq":
                    value = (root / "lq" / f"{s}.jpg").read_bytes()
                elif kind == "gt":
                    value = pickle.dumps(np.ascontiguousarray(read_hdr(root / "gt" / f"{s}.exr")[..., ::-1]))
                else:
                    value = pickle.dumps({"dgain": 1.0 + stems.index(s), "gamma": 2.2, "strategy": "x"})
                txn.put(s.encode(), value)
        (out / f"{kind}.lmdb" / "meta_info.txt").write_text("".join(f"{s}.png ({H},{W},3) 1\n" for s in stems))


def test_origin_pickled_lmdb_only_with_allow_pickle(tmp_path):
    root = make_hdr_folder(tmp_path / "d")
    out = tmp_path / "fork"
    _fork_style_lmdb(root, out)
    with pytest.raises(OptionError) as ei:
        build_dataset(_lmdb_opt(out, root))
    assert "pickle" in str(ei.value) and "allow_pickle: true" in str(ei.value) and "run code" in str(ei.value)
    opt = _lmdb_opt(out, root)
    opt["io_backend"] = {"type": "lmdb", "allow_pickle": True}
    with pytest.warns(UserWarning, match="runs code"):
        ds = build_dataset(opt)
    disk = build_dataset(_opt(root))
    for i in range(3):
        torch.testing.assert_close(ds[i]["gt"], disk[i]["gt"], rtol=0, atol=0)
        torch.testing.assert_close(ds[i]["lq"], disk[i]["lq"], rtol=0, atol=0)


# ------------------------------------------------------------------ meta_info_file
def test_meta_info_file_selects_and_orders_stems(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", "d"))
    os.remove(root / "lq" / "d.jpg")  # an unlisted, unpaired file is ignored
    meta = tmp_path / "meta.txt"
    meta.write_text("# training subset\nc.exr (40,48,3) 1\na\n")
    ds = build_dataset(_opt(root, meta_info_file=str(meta)))
    assert [os.path.basename(ds.reader.paths(i)["gt_path"]) for i in range(len(ds))] == ["c.exr", "a.exr"]
    meta.write_text("a\nzz\nyy\n")
    with pytest.raises(PairingError, match=r"2 stem\(s\) listed in meta_info_file=.*meta\.txt.*zz, yy"):
        build_dataset(_opt(root, meta_info_file=str(meta)))
    meta.write_text("a\nb\na\n")
    with pytest.raises(OptionError, match="twice: a"):
        build_dataset(_opt(root, meta_info_file=str(meta)))
    with pytest.raises(OptionError, match="meta_info_file' = .*nothere.txt' does not exist"):
        build_dataset(_opt(root, meta_info_file=str(tmp_path / "nothere.txt")))
    os.remove(root / "gt" / "d.exr")
    out = tmp_path / "lmdb"
    build_lmdb(root, out)
    meta.write_text("b\n")
    assert len(build_dataset(_lmdb_opt(out, root, meta_info_file=str(meta)))) == 1


# ------------------------------------------------------------------ checks
def test_every_bad_input_is_named_before_training(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("ok", "nan", "trunc", "garbage", "nogamma", "zero", "size"))
    hdr = read_hdr(root / "gt" / "nan.exr")
    hdr[3, 4, 1] = np.inf
    write_hdr(root / "gt" / "nan.exr", hdr)
    data = (root / "lq" / "trunc.jpg").read_bytes()
    (root / "lq" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    os.remove(root / "gt" / "garbage.exr")
    (root / "gt" / "garbage.npy").write_bytes(b"\x93NUMPY not really")
    (root / "dg" / "nogamma.txt").write_text("dgain: 2\n")
    (root / "dg" / "zero.txt").write_text("dgain: 0\ngamma: 2.2\n")
    write_hdr(root / "gt" / "size.exr", np.ones((H + 1, W, 3), np.float32))
    before = {p: sorted(os.listdir(root / p)) for p in ("lq", "gt", "dg")}
    with pytest.raises(DatasetCheckError) as ei:
        build_dataset(_opt(root, "train"))
    msg = str(ei.value)
    for words in ("nan.exr' has 1 NaN or Inf", "trunc.jpg' is a truncated JPEG", "garbage.npy", "nogamma.txt' has no 'gamma:'",
                  "zero.txt', line 1: 'dgain' must be a finite number > 0", "size.exr' is 41x48", "Fix"):
        assert words in msg, (words, msg)
    assert "ok." not in msg
    assert {p: sorted(os.listdir(root / p)) for p in ("lq", "gt", "dg")} == before  # nothing written into the data
    # quick reports what the cache knows from the full scan ...
    with pytest.raises(DatasetCheckError, match="nan.exr"):
        build_dataset(_opt(root, "val", check="quick"))
    # ... and without a cache reads headers only (the NaN needs the pixel scan)
    with pytest.raises(DatasetCheckError) as ei:
        build_dataset(_opt(root, "val", check="quick", check_cache_dir=False))
    assert "nan.exr" not in str(ei.value) and "trunc.jpg" in str(ei.value)
    # with the checks off, an item with NaN in its window still stops with the file named
    ds = build_dataset(_opt(root, "val", check="off"))
    with pytest.raises(ValueError, match="nan.exr' has NaN or Inf"):
        ds[[os.path.basename(r["gt_path"]) for r in ds.reader.records].index("nan.exr")]


def test_negative_values_are_counted_and_small_images_padded_or_refused(tmp_path, capsys):
    root = make_hdr_folder(tmp_path / "d", stems=("neg", "small"))
    hdr = read_hdr(root / "gt" / "neg.exr")
    hdr[:2, :3, 0] = -0.5
    write_hdr(root / "gt" / "neg.exr", hdr)
    small = make_hdr_folder(tmp_path / "s", stems=("small",), size=(12, 20))
    for sub, ext in (("gt", ".exr"), ("lq", ".jpg")):
        os.replace(small / sub / f"small{ext}", root / sub / f"small{ext}")
    records = []  # the report goes to the DiffIR logger once a run has set it up, else to stdout
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logging.getLogger("DiffIR").addHandler(handler)
    try:
        ds = build_dataset(_opt(root, "train", gt_size=16))
    finally:
        logging.getLogger("DiffIR").removeHandler(handler)
    out = capsys.readouterr().out + "\n".join(records)
    assert "negative values (6 in all)" in out and "neg.exr (6)" in out and "reflect-padded" in out and "small.exr" in out
    assert ds.check_report.negatives == [("neg.exr", 6)]
    item = ds[[os.path.basename(r["gt_path"]) for r in ds.reader.records].index("small.exr")]
    assert item["gt"].shape == (3, 16, 16)
    assert float(build_dataset(_opt(root, check="off"))[0]["gt"].min()) >= 0.0  # clamped
    with pytest.raises(DatasetCheckError, match=r"small.exr' is 12x20, smaller than gt_size=16.*small_images: pad"):
        build_dataset(_opt(root, "train", gt_size=16, small_images="error"))
    out = tmp_path / "lmdb"  # the LMDB writer counts them too, and its count is what the full check reports
    assert build_lmdb(root, out, batch_items=1)["negatives"] == {"neg": 6}
    ds = build_dataset(_lmdb_opt(out, root, "train", gt_size=16))
    assert ds.check_report.negatives == [("neg", 6)] and ds.check_report.padded == ["small"]
    with pytest.raises(DatasetCheckError, match="small' is 12x20"):
        build_dataset(_lmdb_opt(out, root, "train", gt_size=16, small_images="error"))


def test_check_cache_reads_only_new_or_changed_files(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c"))
    cache_dir = tmp_path / "cache"
    r1 = check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    assert r1.ok and r1.decoded == 3 and r1.from_cache == 0 and len(os.listdir(cache_dir)) >= 1
    r2 = check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    assert r2.decoded == 0 and r2.from_cache == 9
    hdr = read_hdr(root / "gt" / "b.exr")
    hdr[0, 0, 0] = np.nan
    write_hdr(root / "gt" / "b.exr", hdr)
    r3 = check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    assert r3.decoded == 1 and not r3.ok and "b.exr" in r3.error_text()
    r4 = check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    assert r4.decoded == 0 and "b.exr" in r4.error_text()  # the cached result still fails
    # an unusable cache folder only costs a warning (e.g. a read-only home)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(DatasetCheckError):
        check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(blocker)).raise_if_errors()
    assert CheckCache([str(root)], cache_dir=False).path is None


def test_check_settings_are_checked_once_and_run_any_reader(tmp_path):
    with pytest.raises(OptionError, match="'datasets:val:check' = 'fast' is unknown"):
        CheckSettings(level="fast", where="datasets:val")
    with pytest.raises(OptionError, match="small_images' = 'crop' is unknown"):
        CheckSettings(small_images="crop")
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b"), size=(12, 20))
    settings = CheckSettings("quick", gt_size=16, where="datasets:train", cache_dir=False)
    report = settings.run(build_dataset(_opt(root, check="off")).reader)
    assert report.ok and report.level == "quick" and report.padded == ["a.exr", "b.exr"]
    report = replace(settings, small_images="error").run(build_dataset(_opt(root, check="off")).reader)
    assert not report.ok and "'" + str(root / "gt" / "a.exr") + "' is 12x20" in report.error_text()


def test_check_cache_entries_have_named_fields_and_older_formats_are_ignored(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a",))
    cache_dir = tmp_path / "cache"
    check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    (path,) = [p for p in cache_dir.iterdir() if p.suffix == ".json"]
    data = json.loads(path.read_text())
    gt = data["files"]["gt/a.exr"]
    assert data["version"] == CACHE_VERSION and gt["height"] == H and gt["width"] == W and gt["scanned"] is True
    assert gt["nonfinite"] == 0 and data["files"]["dgain/a.txt"]["dgain"] == 1.0
    cache = CheckCache([str(root / d) for d in ("lq", "gt", "dg")], str(cache_dir))
    st = CheckCache.stat(str(root / "gt" / "a.exr"))
    facts = cache.get("gt/a.exr", st, ImageFacts)
    assert facts == ImageFacts(H, W, True, 0, 0, channels=3, peak=gt["peak"]) and 100 < gt["peak"] <= 1000
    assert cache.get("gt/a.exr", st, DgainFacts) is None  # other fields: a miss, not a misread
    # a cache of the positional version 1 format is ignored (everything decoded again), not misread
    data["version"] = 1
    data["files"] = {k: [v["size"], v["mtime_ns"], 1, 1, 1, 0, 0] for k, v in data["files"].items()}
    path.write_text(json.dumps(data))
    r = check_reader(build_dataset(_opt(root, check="off")).reader, "full", cache_dir=str(cache_dir))
    assert r.ok and r.from_cache == 0 and r.decoded == 1


# ------------------------------------------------------------------ seeding, sampler, prefetchers
def test_sample_seeds_differ_by_worker_rank_and_epoch_and_are_reproducible(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", "d"), size=(64, 64))
    ds = build_dataset(_opt(root, "train", gt_size=8))
    same = [SampleIndex(0, 1, 0, 0, 0), SampleIndex(0, 1, 0, 0, 0)]
    assert torch.equal(ds[same[0]]["gt"], ds[same[1]]["gt"])
    variants = [SampleIndex(0, 1, 0, 0, 1), SampleIndex(0, 1, 1, 0, 0), SampleIndex(0, 1, 0, 1, 0), SampleIndex(0, 2, 0, 0, 0)]
    for v in variants:  # position (hence worker), epoch, rank, seed
        assert not torch.equal(ds[v]["gt"], ds[same[0]]["gt"]), v
    assert pickle.loads(pickle.dumps(variants[2])).rank == 1

    def run(num_workers, ranks=(0,), epochs=(0, 1), persistent=True):
        opt = _opt(root, "train", gt_size=8, num_worker_per_gpu=num_workers, batch_size_per_gpu=2,
                   persistent_workers=persistent)
        out = {}
        for rank in ranks:
            sampler = EnlargedSampler(ds, len(ranks), rank, 2, seed=11)
            loader = build_dataloader(ds, opt, num_gpu=1, dist=True, sampler=sampler, seed=0)
            for epoch in epochs:
                sampler.set_epoch(epoch)
                out[rank, epoch] = torch.cat([b["gt"] for b in loader])
        return out

    two = run(2)  # persistent workers across epochs
    assert not torch.equal(two[0, 0], two[0, 1])
    zero = run(0)
    assert all(torch.equal(two[k], zero[k]) for k in two)  # independent of the number of workers
    ranks = run(0, ranks=(0, 1), epochs=(0,))
    assert not torch.equal(ranks[0, 0], ranks[1, 0])
    # a mid-epoch start draws what the full epoch drew from there on
    sampler = EnlargedSampler(ds, 1, 0, 2, seed=11)
    sampler.set_epoch(1, start=4)
    tail = torch.stack([ds[i]["gt"] for i in sampler])
    assert torch.equal(tail, two[0, 1][4:])


def test_enlarged_sampler_shards_an_enlarged_epoch_over_ranks():
    class Sized:
        def __len__(self):
            return 10

    shards = [list(EnlargedSampler(Sized(), 4, r, 3, seed=0)) for r in range(4)]
    assert all(len(s) == 8 for s in shards)  # ceil(10 * 3 / 4)
    assert all(i.rank == r and i.epoch == 0 for r, s in enumerate(shards) for i in s)
    assert np.bincount([int(i) for s in shards for i in s], minlength=10).min() >= 3


def test_prefetchers(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", "d"))
    opt = _opt(root, "train", num_worker_per_gpu=0)
    ds = build_dataset(opt)
    sampler = EnlargedSampler(ds, 1, 0, 1, seed=0)
    loader = build_dataloader(ds, opt, num_gpu=1, sampler=sampler, seed=0)
    ref = [b["gt"] for b in loader]
    for mode in (None, "cpu"):
        pf = build_prefetcher(loader, loader_options({**opt, "prefetch_mode": mode, "num_prefetch_queue": 2}), "cpu")
        assert isinstance(pf, CPUPrefetcher) and len(pf) == 2
        for _ in range(2):  # two epochs: iteration resets
            got = [b["gt"] for b in pf]
            assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, ref))
        pf.reset()
        assert pf.next() is not None and pf.next() is not None and pf.next() is None

    def broken():
        yield {"x": 1}
        raise ValueError("bad file 'z.exr'")

    class Loader:
        def __iter__(self):
            return broken()

    pf = CPUPrefetcher(Loader(), num_prefetch_queue=1)
    with pytest.raises(ValueError, match="z.exr"):
        list(pf)
    with pytest.raises(OptionError, match="pin_memory"):
        build_prefetcher(loader, loader_options({**opt, "prefetch_mode": "cuda"}), "cpu")
    with pytest.raises(OptionError, match="needs a CUDA device"):
        build_prefetcher(loader, loader_options({**opt, "prefetch_mode": "cuda", "pin_memory": True}), "cpu")
    with pytest.raises(OptionError, match="prefetch_mode"):
        build_prefetcher(loader, loader_options({**opt, "prefetch_mode": "gpu"}), "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefetcher_moves_tensors():
    loader = [{"lq": torch.ones(2, 3).pin_memory(), "lq_path": ["a", "b"]} for _ in range(3)]
    pf = CUDAPrefetcher(loader, "cuda")
    got = list(pf)
    assert len(got) == 3 and got[0]["lq"].is_cuda and got[0]["lq_path"] == ["a", "b"]


# ------------------------------------------------------------------ scripts
def _yml(tmp_path, root, name):
    opt = short_run_options(name, {"train": _opt(root, "train")})
    del opt["datasets"]["train"]["phase"]
    return write_yaml(tmp_path / f"{name}.yml", opt)


@pytest.mark.slow
def test_scripts_check_build_and_train_refuses_a_bad_set(tmp_path, capsys):
    check_dataset, create_lmdb_hdr = import_scripts()
    root = make_hdr_folder(tmp_path / "d")
    yml = _yml(tmp_path, root, "clean_set")
    assert check_dataset.main(["-opt", str(yml)]) == 0
    assert "3 pairs OK" in capsys.readouterr().out
    out = tmp_path / "lmdb"
    assert create_lmdb_hdr.main(["--lq", str(root / "lq"), "--gt", str(root / "gt"), "--dgain", str(root / "dg"),
                                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "dgain.lmdb" / "meta_info.txt").is_file()
    (root / "dg" / "b.txt").write_text("gamma: 2\n")
    assert check_dataset.main(["-opt", str(yml)]) == 1
    assert "b.txt' has no 'dgain:' line" in capsys.readouterr().out
    name = "bad_set_test_data_scale"
    yml = _yml(tmp_path, root, name)
    proc = run_entry(tmp_path, "train_hdr.py", "-opt", str(yml))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "b.txt' has no 'dgain:' line" in proc.stderr and "Nothing was trained" in proc.stderr
    assert not (tmp_path / "experiments" / name).exists()  # nothing half-written


def test_pickled_lmdb_record_that_names_code_is_refused_even_with_allow_pickle(tmp_path):
    from DiffIR.data.lmdb_reader import LmdbPairReader
    from DiffIR.utils.image_common import ImageIOError

    arr = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    reader = LmdbPairReader.__new__(LmdbPairReader)
    np.testing.assert_array_equal(reader._unpickle(pickle.dumps(arr), "a"), arr)
    assert reader._unpickle(pickle.dumps({"dgain": 2.0, "gamma": 2.2}), "b") == {"dgain": 2.0, "gamma": 2.2}
    with pytest.raises(ImageIOError, match="posix.system|os.system|nt.system"):
        reader._unpickle(pickle.dumps(os.system), "c")
