"""Tests of the DiffIR stage-1 network: checkpoint layout, modes, HDR conditioning, equality with the official code."""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from DiffIR.archs import build_network
from DiffIR.archs.cpen import CPEN, CPEN_S1
from DiffIR.archs.diffir_s1_arch import DiffIRS1
from DiffIR.archs.dirformer import DIRformer, LayerNorm

from helpers import sine_images

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "diffir_s1_golden.pt"
REFERENCE = Path(os.environ.get("DIFFIR_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))

# network_g of the official train_DiffIRS1.yml (also the top of diffir_s1_state_dict.json).
OFFICIAL_S1 = dict(
    n_encoder_res=5, inp_channels=3, out_channels=3, dim=48, num_blocks=[3, 5, 6, 6], num_refinement_blocks=4,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2, bias=False, LayerNorm_type="WithBias",
)
# Digests of "key shape" lines (shape as AxBxC) of the reference manifests, so the layout checks also run
# where /work/shared/reference is not available.
S1_LAYOUT_SHA256 = "71a84a7793cbfe80f34354e1866884af311acec0a4ad1f69e9c296961256886a"
S2_CPEN_LAYOUT_SHA256 = "4fd245cfe92718861d9cad0f1dc4832e7e79fb201df3f2f3e51da8ec7d918a82"  # condition.* without prefix
S1_NUM_PARAMS = 26_742_206

# Config the golden file was produced with (see tests/data/README.md).
SMALL = dict(
    n_encoder_res=2, inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2, bias=False, LayerNorm_type="WithBias",
)


def _layout(sd: Dict[str, torch.Tensor]) -> List[Tuple[str, Tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def _digest(layout: List[Tuple[str, Tuple[int, ...]]]) -> str:
    text = "\n".join(f"{k} {'x'.join(map(str, s))}" for k, s in layout)
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(name: str):
    path = REFERENCE / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def full_net() -> DiffIRS1:
    torch.manual_seed(0)
    return build_network({"type": "DiffIRS1", **OFFICIAL_S1})


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint layout
# ----------------------------------------------------------------------------------------------------------------


def test_state_dict_matches_official_manifest(full_net: DiffIRS1) -> None:
    layout = _layout(full_net.state_dict())
    manifest = _manifest("diffir_s1_state_dict.json")
    if manifest is not None:
        expected = [(e["key"], tuple(e["shape"])) for e in manifest["state_dict"]]
        assert {k: v for k, v in manifest["network_g"].items() if k != "type"} == OFFICIAL_S1
        missing = [k for k, _ in expected if k not in dict(layout)]
        extra = [k for k, _ in layout if k not in dict(expected)]
        assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
        assert layout == expected  # same order and shapes
    assert len(layout) == 536
    assert _digest(layout) == S1_LAYOUT_SHA256
    assert sum(p.numel() for p in full_net.parameters()) == S1_NUM_PARAMS
    assert sum(p.numel() for p in full_net.G.parameters()) == 25_669_374
    assert sum(p.numel() for p in full_net.E.parameters()) == 1_072_832
    assert list(full_net.buffers()) == []


def test_manifest_state_dict_loads_strictly_from_basicsr_container(full_net: DiffIRS1, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    layout = _layout(full_net.state_dict())
    params = {k: torch.randn(s, generator=gen) for k, s in layout}
    params_ema = {k: v * 0.5 for k, v in params.items()}
    assert full_net.load_state_dict(params, strict=True)  # plain state_dict

    ckpt = tmp_path / "net_g_latest.pth"
    torch.save({"params": params, "params_ema": params_ema}, ckpt)
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(loaded) == {"params", "params_ema"}
    full_net.load_state_dict(loaded["params_ema"], strict=True)
    sd = full_net.state_dict()
    for key in ("G.patch_embed.proj.weight", "G.latent.5.attn.temperature", "G.refinement.3.ffn.kernel.0.weight",
                "E.E.0.bias", "E.mlp.2.weight"):
        assert torch.equal(sd[key], params_ema[key]), key


def test_stage2_cpen_layout_matches_official_condition_keys() -> None:
    cpen = CPEN(in_channels=48, n_encoder_res=5)
    layout = _layout(cpen.state_dict())
    manifest = _manifest("diffir_s2_state_dict.json")
    if manifest is not None:
        expected = [(e["key"][len("condition."):], tuple(e["shape"])) for e in manifest["state_dict"]
                    if e["key"].startswith("condition.")]
        assert layout == expected
    assert _digest(layout) == S2_CPEN_LAYOUT_SHA256
    assert sum(p.numel() for p in cpen.parameters()) == 1_045_184
    lq, _ = sine_images(2, 16, 16)
    assert cpen(lq).shape == (2, 256)


# ----------------------------------------------------------------------------------------------------------------
# Behaviour
# ----------------------------------------------------------------------------------------------------------------


def test_train_and_eval_modes() -> None:
    torch.manual_seed(0)
    net = DiffIRS1(**SMALL)
    lq, gt = sine_images(2, 16, 24)
    net.train()
    out, iprs = net(lq, gt)
    assert out.shape == lq.shape
    assert isinstance(iprs, list) and len(iprs) == 1 and iprs[0].shape == (2, 256)
    assert torch.allclose(iprs[0], net.E(lq, gt))
    out.mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    net.eval()
    with torch.no_grad():
        out_eval = net(lq, gt)
    assert isinstance(out_eval, torch.Tensor) and out_eval.shape == lq.shape
    assert torch.allclose(out_eval, out.detach(), atol=1e-6)


def test_size_not_multiple_of_8_raises_clear_error() -> None:
    net = DiffIRS1(**SMALL).eval()
    lq, gt = sine_images(1, 20, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(lq, gt)
    lq, gt = sine_images(1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        net(lq, gt[..., :8])


def test_registry_and_option_defaults() -> None:
    net = build_network({"type": "DiffIRS1", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                         "n_encoder_res": 1})
    assert isinstance(net, DiffIRS1) and not net.dgain_cond
    # Official class defaults: ffn 2.66 -> hidden int(8 * 2.66) = 21; heads [1, 2, 4, 8].
    assert net.G.encoder_level1[0].ffn.project_out.weight.shape == (8, 21, 1, 1)
    assert net.G.latent[0].attn.temperature.shape == (8, 1, 1)


def test_dirformer_ipr_dim_argument() -> None:
    g = DIRformer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, ffn_expansion_factor=2, ipr_dim=32)
    assert g.encoder_level1[0].attn.kernel[0].weight.shape == (16, 32)
    x, _ = sine_images(1, 8, 8)
    assert g(x, torch.randn(1, 32)).shape == x.shape


@pytest.mark.parametrize("kind", ["WithBias", "BiasFree"])
def test_layernorm_matches_official_formula(kind: str) -> None:
    """Per-pixel norm over channels as written in the official code (on a (B, HW, C) view)."""
    ln = LayerNorm(12, kind)
    with torch.no_grad():
        for p in ln.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 12, 5, 7) * 3 + 1
    t = x.flatten(2).transpose(1, 2)
    var = t.var(-1, keepdim=True, unbiased=False)
    if kind == "WithBias":
        ref = (t - t.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * ln.body.weight + ln.body.bias
    else:
        ref = t / torch.sqrt(var + 1e-5) * ln.body.weight
    ref = ref.transpose(1, 2).reshape(x.shape)
    assert torch.allclose(ln(x), ref, atol=1e-5)
    assert [k for k, _ in ln.state_dict().items()] == (
        ["body.weight", "body.bias"] if kind == "WithBias" else ["body.weight"]
    )


def test_cpen_s1_input_validation() -> None:
    cpen = CPEN_S1(n_encoder_res=1)
    lq, gt = sine_images(1, 8, 8)
    assert cpen(lq, gt).shape == (1, 256)
    with pytest.raises(ValueError, match="96 channels"):
        CPEN.forward(cpen, lq)


# ----------------------------------------------------------------------------------------------------------------
# HDR conditioning on (dgain, gamma)
# ----------------------------------------------------------------------------------------------------------------


def test_dgain_cond_extra_keys_identity_at_init_and_effect() -> None:
    torch.manual_seed(0)
    base = DiffIRS1(**SMALL, identity_init=False).eval()
    cond_net = DiffIRS1(**SMALL, dgain_cond=True, identity_init=False).eval()
    base_keys = list(base.state_dict())
    cond_keys = list(cond_net.state_dict())
    assert cond_keys[: len(base_keys)] == base_keys
    extra = cond_keys[len(base_keys):]
    assert extra and all(k.startswith("cond_embed.") for k in extra)

    res = cond_net.load_state_dict(base.state_dict(), strict=False)  # an official checkpoint in a cond model
    assert not res.unexpected_keys and sorted(res.missing_keys) == sorted(extra)

    lq, gt = sine_images(2, 16, 16)
    cond = torch.tensor([[4.0, 2.2], [0.5, 1.0]])
    with torch.no_grad():
        ref = base(lq, gt)
        assert torch.equal(base(lq, gt, cond), ref)  # ignored without dgain_cond
        assert torch.allclose(cond_net(lq, gt, cond), ref, atol=1e-6)  # zero-initialised last layer

        gen = torch.Generator().manual_seed(3)
        for p in cond_net.cond_embed.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
        out_a = cond_net(lq, gt, cond)
        out_b = cond_net(lq, gt, torch.tensor([[1.0, 2.2], [8.0, 2.4]]))
    assert (out_a - ref).abs().max() > 1e-3
    assert (out_a - out_b).abs().max() > 1e-3

    cond_net.train()
    _, (ipr,) = cond_net(lq, gt, cond)
    assert torch.allclose(ipr, cond_net.extract_ipr(lq, gt, cond))

    with pytest.raises(ValueError, match="cond"):
        cond_net(lq, gt)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        cond_net(lq, gt, torch.ones(2, 3))


# ----------------------------------------------------------------------------------------------------------------
# Equality with the official implementation
# ----------------------------------------------------------------------------------------------------------------


def test_golden_equivalence_with_official_code() -> None:
    """Outputs recorded from the official S1_arch.py (see tests/data/README.md) are reproduced exactly."""
    golden = torch.load(GOLDEN, map_location="cpu", weights_only=True)
    sd = torch.load(io.BytesIO(lzma.decompress(golden["state_dict_pt_xz"].numpy().tobytes())), weights_only=True)
    net = DiffIRS1(**SMALL)
    net.load_state_dict(sd, strict=True)
    assert list(net.state_dict()) == list(sd)  # same key order as the official module tree

    net.eval()
    with torch.no_grad():
        out = net(golden["lq"], golden["gt"])
    assert (out - golden["out_eval"]).abs().max().item() < 1e-5

    net.train()
    with torch.no_grad():
        out_train, (ipr,) = net(golden["lq"], golden["gt"])
    assert (ipr - golden["ipr_train"]).abs().max().item() < 1e-5
    assert (out_train - golden["out_train"]).abs().max().item() < 1e-5
