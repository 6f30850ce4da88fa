"""Preview grids (input | output | GT | error map) of fixed validation images: on disk and in TensorBoard."""
import glob

import cv2
import numpy as np
import pytest
import torch
import yaml

import DiffIR.models.base_model as base_model
from DiffIR.config.sections import check_val_options
from DiffIR import test_pipeline as tp
from DiffIR.models.evaluation import (PREVIEW_ERROR_SCALE, ToneDomain, error_map, evaluate_dataset, preview_domains,
                                      preview_row, publish_previews)
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.img_util import make_preview_grid
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import display_tone_map

from test_evaluation import _loader, _model, _test_yml, _weights
from helpers import train_options


def _png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint8, path
    return img[..., ::-1]  # RGB


def _tb_images(root, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(glob.glob(str(root / "tb_logger" / name / "events.*"))[0], size_guidance={"images": 0})
    acc.Reload()
    return acc


# ------------------------------------------------------------------------------------------- the panels
def test_error_map_is_black_for_a_perfect_output_and_saturates_at_the_fixed_scale():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 20, 30, generator=g) * 0.9
    zero = error_map(gt.clone(), gt)
    assert zero.shape == (3, 20, 30) and zero.dtype == torch.float32
    assert zero.max() <= 4 / 255  # inferno's bottom: (0, 0, 4)
    off = gt.clone()
    off[:, :, :10] += PREVIEW_ERROR_SCALE  # left third off by the scale: the top of the colour map
    off[:, :, 10:20] += PREVIEW_ERROR_SCALE / 2
    emap = error_map(off.clamp(max=1.0), gt)
    full, half, none = emap[:, :, 5], emap[:, :, 15], emap[:, :, 25]
    assert full.mean(dim=1).tolist() == pytest.approx([252 / 255, 1.0, 164 / 255], abs=0.01)
    assert none.max() <= 4 / 255
    assert full.sum(0).min() > half.sum(0).max() > none.sum(0).max()  # brighter with more error
    # the mean over channels: one channel off by 3x the scale reads as the scale (the top), by 1.5x as half
    low = gt * 0.6
    one = low.clone()
    one[0] += 3 * PREVIEW_ERROR_SCALE
    torch.testing.assert_close(error_map(one, low), emap[:, :, :10].mean(dim=(1, 2), keepdim=True).expand(3, 20, 30),
                               atol=1e-6, rtol=0)
    shrunk = error_map(off.clamp(max=1.0), gt, max_size=15)
    assert shrunk.shape == (3, 10, 15)


def test_preview_row_uses_the_save_preview_tone_map_and_shrinks_large_images():
    dom = ToneDomain("log", 1000.0)
    g = torch.Generator().manual_seed(1)
    lq, out, gt = (torch.rand(3, 40, 60, generator=g) for _ in range(3))
    gt[0, 0, 0] = 1.3  # above hdr_max: kept in the GT, clipped by the display map
    row = preview_row(lq, out, gt, domain=dom, input_domain=dom)
    assert [tuple(p.shape) for p in row] == [(3, 40, 60)] * 4
    for panel, t, clip in ((row[0], lq, True), (row[1], out, True), (row[2], gt, False)):
        expected = display_tone_map(dom.to_linear(t, clip), "reinhard", hdr_max=1000.0)
        np.testing.assert_allclose(panel.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert row[2][0, 0, 0] == 1.0  # the display map's white
    torch.testing.assert_close(row[3], error_map(out, gt))
    small = preview_row(lq, out, None, domain=None, input_domain=None, max_size=30)  # no GT; LDR task: as is
    assert [tuple(p.shape) for p in small] == [(3, 20, 30)] * 2
    torch.testing.assert_close(small[1], torch.nn.functional.interpolate(out[None], size=(20, 30), mode="area")[0])


def test_preview_domains_follow_the_dataset(tmp_path):
    loader = _loader(tmp_path)
    assert preview_domains(loader.dataset) == (ToneDomain("log", 1000.0),) * 2
    loader.dataset.lq_linearize = False  # the input is the LDR itself: shown as is
    assert preview_domains(loader.dataset) == (ToneDomain("log", 1000.0), None)

    class Deblur:  # an sRGB task: no tone curve
        opt = {"name": "GoPro"}

    assert preview_domains(Deblur()) == (None, None)


def test_grid_pads_rows_of_different_widths():
    rows = [[torch.ones(3, 4, 5)] * 4, [torch.full((3, 6, 5), 0.5)] * 2]
    grid = make_preview_grid(rows, max_rows=2)
    assert grid.shape == (3, 10, 20)
    assert grid[:, 4:, 10:].abs().max() == 0 and grid[:, 4:, :10].min() == 0.5


# ------------------------------------------------------------------------------------------- evaluation / test.py
def test_fixed_first_images_and_the_option(tmp_path):
    model, loader = _model(), _loader(tmp_path)
    res = evaluate_dataset(model, loader, check_val_options({"pbar": False, "num_preview_images": 1}))
    assert len(res.previews) == 1 and len(res.previews[0]) == 4  # the first image only, with its error map
    path = publish_previews(res, str(tmp_path / "vis"), "7").path
    assert path.endswith("vis/preview_7.png") and _png(path).shape == (40, 4 * 44, 3)
    assert evaluate_dataset(model, loader, check_val_options({"pbar": False})).previews.__len__() == 2  # default 4, the set has 2
    res = evaluate_dataset(model, loader, check_val_options({"pbar": False, "num_preview_images": 0}))
    assert res.previews == [] and publish_previews(res, str(tmp_path / "none")) is None
    assert not (tmp_path / "none").exists()
    weights = _weights(tmp_path)
    for bad in (-1, 1.5, True):
        with pytest.raises(OptionError, match="'val:num_preview_images' is"):  # the option schema's message
            tp.test_pipeline(str(tmp_path), ["-opt", _test_yml(tmp_path, weights, name="bad", num_preview_images=bad)])


def test_sets_without_ground_truth_get_input_and_output_panels(tmp_path):
    """Stage 2's LDR-only test sets: the loop sees no GT, the rows are input | output."""
    loader = _loader(tmp_path)

    class LdrOnly:
        def feed_data(self, data):
            self.lq = data["lq"]

        def test(self):
            pass

        def get_current_visuals(self):
            return {"lq": self.lq, "result": self.lq * 0.9}

    res = evaluate_dataset(LdrOnly(), loader, check_val_options({"pbar": False}))
    assert not res.has_gt and [len(r) for r in res.previews] == [2, 2]
    assert _png(publish_previews(res, str(tmp_path / "vis")).path).shape == (2 * 40, 2 * 44, 3)


def test_test_pipeline_writes_the_grid_beside_the_outputs(tmp_path):
    yml = _test_yml(tmp_path, _weights(tmp_path), save_img=False)  # tiled (tile_size 24); previews need no save_img
    tp.test_pipeline(str(tmp_path), ["-opt", yml])
    vis = tmp_path / "results" / "tiny_test" / "visualization" / "Tiny"
    assert [p.name for p in vis.iterdir()] == ["preview_tiny_test.png"]
    grid = _png(vis / "preview_tiny_test.png")
    assert grid.shape == (2 * 40, 4 * 44, 3)
    log = open(glob.glob(str(tmp_path / "results" / "tiny_test" / "test_*.log"))[0], encoding="utf-8").read()
    assert "preview grid of the first 2 images" in log


def test_only_rank_0_draws(tmp_path, monkeypatch):
    """Validation runs whole on rank 0 (other ranks return at once), so the fixed images are all there; the model
    returns the grid it wrote (for the loop's sinks) instead of writing to TensorBoard itself."""
    model, loader = _model(visualization=str(tmp_path / "vis")), _loader(tmp_path)
    monkeypatch.setattr(base_model, "get_dist_info", lambda: (1, 2))
    other = model.validation(loader, 5)
    assert other.metrics == {} and other.preview is None and not (tmp_path / "vis").exists()
    monkeypatch.setattr(base_model, "get_dist_info", lambda: (0, 2))
    res = model.validation(loader, 5)
    path = tmp_path / "vis" / "Tiny" / "preview_5.png"
    assert res.preview is not None and res.preview.path == str(path) and path.is_file()
    assert res.preview.image.shape == (80, 176, 3) and res.preview.image.dtype == np.uint8
    np.testing.assert_array_equal(res.preview.image, _png(path))


def test_the_loop_records_validation_results_in_its_sinks():
    """Scalars and the preview grid reach every sink of the group, the baseline only when it was computed."""
    from DiffIR.models.evaluation import PreviewGrid, ValidationResult
    from DiffIR.train_loop import _record_validation
    from DiffIR.utils.log_sinks import LogSink, SinkGroup

    class Sink:
        def __init__(self):
            self.calls, self.closed = [], 0

        def scalars(self, values, step):
            self.calls.append(("scalars", dict(values), step))

        def image(self, tag, image, step):
            self.calls.append(("image", tag, image.shape, step))

        def close(self):
            self.closed += 1

    a, b = Sink(), Sink()
    assert isinstance(a, LogSink)
    group = SinkGroup([a, b])
    grid = np.zeros((4, 6, 3), np.uint8)
    _record_validation(group, ValidationResult("V", {"psnr": 30.0}, {"psnr": 25.0}, PreviewGrid("p.png", grid)), 7)
    _record_validation(group, ValidationResult("V", {"psnr": 31.0}), 9)
    assert a.calls == b.calls == [
        ("image", "val/V/input_output_gt_error", (4, 6, 3), 7),
        ("scalars", {"metrics/V/psnr_input": 25.0, "metrics/V/psnr": 30.0}, 7),
        ("scalars", {"metrics/V/psnr": 31.0}, 9)]
    group.close()
    group.close()
    assert a.closed == b.closed == 1 and not group


# ------------------------------------------------------------------------------------------- training
def test_training_writes_grids_and_tensorboard_images_at_each_validation(tmp_path):
    yml = train_options(tmp_path, name="prev", total_iter=4)
    opt = yaml.safe_load(yml.read_text())
    opt["val"].update({"val_freq": 2, "pbar": False})
    opt["logger"].update({"tb_image_freq": 2, "language": "en"})
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    vis = tmp_path / "experiments" / "prev" / "visualization" / "V"
    assert sorted(p.name for p in vis.iterdir()) == ["preview_2.png", "preview_4.png"]  # save_img is off
    first, last = _png(vis / "preview_2.png"), _png(vis / "preview_4.png")
    assert first.shape == last.shape == (2 * 36, 4 * 36, 3)  # both val images, 4 panels of 36x36
    w = 36
    np.testing.assert_array_equal(first[:, :w], last[:, :w])  # the same fixed inputs ...
    np.testing.assert_array_equal(first[:, 2 * w:3 * w], last[:, 2 * w:3 * w])  # ... and GT
    assert not np.array_equal(first[:, w:2 * w], last[:, w:2 * w])  # the output moved on
    assert first[:, w:3 * w].mean() > 10 and first[:, 3 * w:].max() > 20  # an image, and some error
    acc = _tb_images(tmp_path, "prev")
    assert {"val/V/input_output_gt_error", "train/input_output_gt"} <= set(acc.Tags()["images"])
    events = acc.Images("val/V/input_output_gt_error")
    assert [e.step for e in events] == [2, 4] and (events[-1].height, events[-1].width) == (72, 144)
    tb = cv2.imdecode(np.frombuffer(events[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(tb, last)  # TensorBoard shows the grid that is on disk
    train = acc.Images("train/input_output_gt")[-1]
    assert (train.height, train.width) == (2 * 32, 4 * 32)  # batch 2 of 32x32 patches, with the error map
