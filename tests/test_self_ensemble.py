"""Flip self-ensemble (val.self_ensemble, --self_ensemble): the transforms, their inverses, tiling, stage 2's noise."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

import DiffIR.inference_pipeline as ip
import DiffIR.models.diffir_s1_model as s1_model
import DiffIR.models.diffir_s2_model as s2_model
from DiffIR import test_pipeline as tp
from DiffIR.archs.diffir_s2_arch import DiffIRS2
from DiffIR.data.synthetic_hdr import generate_dataset
from DiffIR.models import build_model
from DiffIR.models.diffir_s2_model import restore_ldr_only
from DiffIR.models.self_ensemble import self_ensemble
from DiffIR.utils.checkpoint import atomic_save
from DiffIR.utils.errors import OptionError

from conftest import ROOT
from helpers import PSNR, TINY_NET, TINY_S2, hdr_datasets, save_tiny_s2, write_yaml

# the 8 symmetries of the square written out by hand (forward, inverse), independent of the module under test
MANUAL = [
    (lambda x: x, lambda y: y),
    (lambda x: x.flip(-1), lambda y: y.flip(-1)),
    (lambda x: x.flip(-2), lambda y: y.flip(-2)),
    (lambda x: x.flip(-2, -1), lambda y: y.flip(-2, -1)),
    (lambda x: x.transpose(-2, -1), lambda y: y.transpose(-2, -1)),
    (lambda x: x.flip(-1).transpose(-2, -1), lambda y: y.transpose(-2, -1).flip(-1)),
    (lambda x: x.flip(-2).transpose(-2, -1), lambda y: y.transpose(-2, -1).flip(-2)),
    (lambda x: x.flip(-2, -1).transpose(-2, -1), lambda y: y.transpose(-2, -1).flip(-2, -1)),
]


def _manual_mean(fn, n: int, *inputs: torch.Tensor) -> torch.Tensor:
    return torch.stack([inv(fn(*[fwd(x) for x in inputs])) for fwd, inv in MANUAL[:n]]).mean(0)


def _images(h: int = 24, w: int = 40, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(1, 3, h, w, generator=g) * 0.8
    return lq, (lq + 0.1 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def test_equivariant_functions_are_unchanged_by_the_ensemble():
    lq, gt = _images(5, 7)  # non-square: the transposed passes see 7 x 5 images
    pointwise = lambda a, b: torch.cat([a * 2 + 1, a * b], dim=1)  # noqa: E731
    plain = pointwise(lq, gt)
    for n in (0, 4, 8):
        out = self_ensemble(pointwise, lq, gt, n=n)
        assert out.shape == (1, 6, 5, 7)
        torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)


def test_non_equivariant_function_gives_the_mean_of_the_transformed_outputs():
    x, _ = _images(5, 7)
    calls: List[tuple] = []

    def fn(a):
        calls.append(tuple(a.shape[-2:]))
        return a.cumsum(-1) + torch.arange(a.shape[-2], dtype=a.dtype)[:, None]  # depends on direction and axis

    assert torch.equal(self_ensemble(fn, x, n=0), fn(x))
    for n in (4, 8):
        calls.clear()
        out = self_ensemble(fn, x, n=n)
        assert len(calls) == n and calls.count((7, 5)) == (4 if n == 8 else 0)
        torch.testing.assert_close(out, _manual_mean(fn, n, x), rtol=0, atol=1e-5)
        assert not torch.allclose(out, fn(x), atol=1e-3)
    assert not torch.allclose(self_ensemble(fn, x, n=4), self_ensemble(fn, x, n=8), atol=1e-3)
    with pytest.raises(ValueError, match="self_ensemble must be one of 0, 4, 8"):
        self_ensemble(fn, x, n=2)


def _s1_model(val: Dict[str, Any]):
    torch.manual_seed(0)
    return build_model({"name": "t", "model_type": "DiffIRS1Model", "num_gpu": 0, "is_train": False,
                        "network_g": dict(TINY_NET, identity_init=False), "val": val, "path": {}})


def _restore(model, lq, gt=None):
    model.feed_data({"lq": lq} if gt is None else {"lq": lq, "gt": gt})
    model.test()
    return model.output


def test_stage1_tiled_ensemble_is_the_ensemble_of_tiled_passes_with_the_gt_transformed():
    """Each pass is the whole tiled inference (prior from the whole flipped LQ+GT, DIRformer per tile)."""
    lq, gt = _images(24, 40)
    tiled = {"tile_size": 16, "tile_overlap": 8}
    single = _s1_model(tiled)
    for n in (4, 8):
        out = _restore(_s1_model({**tiled, "self_ensemble": n}), lq, gt)
        expected = _manual_mean(lambda a, b: _restore(single, a, b), n, lq, gt)
        assert out.shape == lq.shape
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    whole = _restore(_s1_model({}), lq, gt)
    assert not torch.allclose(_restore(_s1_model({"self_ensemble": 8}), lq, gt), whole, atol=1e-4)


def _tiny_s2() -> DiffIRS2:
    torch.manual_seed(0)
    return DiffIRS2(**{k: v for k, v in TINY_S2.items() if k != "type"}, identity_init=False).eval()


def _record_noise(monkeypatch) -> List[torch.Tensor]:
    """Every torch.randn / randn_like draw (the diffusion's start and step noise) from now on."""
    drawn: List[torch.Tensor] = []
    for name in ("randn", "randn_like"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _real=real, **k: drawn.append(_real(*a, **k)) or drawn[-1])
    return drawn


@pytest.mark.parametrize("seed", [3, None])
def test_stage2_uses_the_same_noise_for_every_flip(monkeypatch, seed):
    net = _tiny_s2()
    lq, _ = _images(16, 24)
    cond = torch.tensor([[2.0, 2.2]])
    plain_draws = _record_noise(monkeypatch)
    restore_ldr_only(net, lq, cond, seed=0)
    per_pass = len(plain_draws)
    assert per_pass >= 2  # the start noise and the reverse steps' draws
    drawn = _record_noise(monkeypatch)
    out = restore_ldr_only(net, lq, cond, seed=seed, tile=16, overlap=8, ensemble=8)
    assert len(drawn) == 8 * per_pass
    for i in range(1, 8):
        for a, b in zip(drawn[:per_pass], drawn[i * per_pass:(i + 1) * per_pass]):
            assert torch.equal(a, b)
    if seed is not None:  # = the mean of separately seeded tiled passes over the flipped images
        expected = _manual_mean(lambda x: restore_ldr_only(net, x, cond, seed=seed, tile=16, overlap=8), 8, lq)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_stage2_model_test_averages_the_flips(monkeypatch):
    lq, _ = _images(16, 24)
    opt = {"name": "s2", "model_type": "DiffIRS2Model", "num_gpu": 0, "is_train": False, "manual_seed": 5,
           "network_g": dict(TINY_S2, identity_init=False), "path": {}}
    torch.manual_seed(0)
    model = build_model({**opt, "val": {"self_ensemble": 4}})
    net = model.get_bare_model(model.net_g).eval()
    expected = _manual_mean(lambda x: restore_ldr_only(net, x, None, seed=5), 4, lq)
    torch.testing.assert_close(_restore(model, lq), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- options
def _spy(monkeypatch, module) -> List[int]:
    """The ``n`` of every self_ensemble call the module makes."""
    seen: List[int] = []
    real = module.self_ensemble
    monkeypatch.setattr(module, "self_ensemble", lambda fn, *x, n=0: seen.append(n) or real(fn, *x, n=n))
    return seen


def _test_yml(tmp_path: Path, **val: Any) -> str:
    torch.manual_seed(0)
    weights = tmp_path / "net_g_1.pth"
    sd = _s1_model({}).net_g.state_dict()
    atomic_save({"params": sd, "params_ema": sd}, str(weights))
    opt = {"name": "ens", "model_type": "DiffIRS1Model", "num_gpu": 0, "manual_seed": 0,
           "datasets": {"val": hdr_datasets(tmp_path / "data")["val"]}, "network_g": dict(TINY_NET),
           "path": {"pretrain_network_g": str(weights)},
           "val": {"pbar": False, "metrics": PSNR, "num_preview_images": 0, **val}, "logger": {"language": "en"}}
    return str(write_yaml(tmp_path / "ens.yml", opt))


def test_test_py_flag_overrides_the_option_and_bad_values_are_refused(tmp_path, monkeypatch, capsys):
    seen = _spy(monkeypatch, s1_model)
    yml = _test_yml(tmp_path, self_ensemble=8)
    tp.test_pipeline(str(tmp_path), ["-opt", yml, "--self_ensemble", "4"])
    assert seen == [4, 4]  # two validation images, each through a 4-flip ensemble
    seen.clear()
    tp.test_pipeline(str(tmp_path), ["-opt", yml])
    assert seen == [8, 8]
    with pytest.raises(SystemExit):
        tp.test_pipeline(str(tmp_path), ["-opt", yml, "--self_ensemble", "3"])
    assert "--self_ensemble: invalid choice: 3" in capsys.readouterr().err
    with pytest.raises(OptionError, match=r"'val:self_ensemble' is 2; use 0 \(off\), 4 .* or 8"):
        tp.test_pipeline(str(tmp_path), ["-opt", _test_yml(tmp_path, self_ensemble=2)])
    with pytest.raises(OptionError, match="'val:self_ensemble' is True"):
        _s1_model({"self_ensemble": True})


def test_inference_flag_reaches_the_network(tmp_path, monkeypatch, capsys):
    save_tiny_s2(tmp_path, hdr_max=1000)
    generate_dataset(tmp_path / "jpg", tmp_path / "hdr", tmp_path / "dgain", num_images=1, size=(16, 24), seed=5)
    args = ["--input", str(tmp_path / "jpg"), "--dgain", str(tmp_path / "dgain"), "--model",
            str(tmp_path / "net_g_5.pth"), "--opt", str(tmp_path / "net.yml"), "--format", "exr"]
    seen = _spy(monkeypatch, s2_model)
    ip.main(str(ROOT), args + ["--output", str(tmp_path / "plain")])
    ip.main(str(ROOT), args + ["--output", str(tmp_path / "ens"), "--self_ensemble", "8"])
    assert seen == [0, 8]
    assert "self-ensemble of 8 flips" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ip.main(str(ROOT), args + ["--output", str(tmp_path / "bad"), "--self_ensemble", "5"])
    assert "--self_ensemble: invalid choice: 5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
