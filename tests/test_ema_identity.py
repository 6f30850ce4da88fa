"""EMA warm-up (recorded, resumed exactly, few-update EMA reported) and the identity start of the DIRformer."""
import logging

import pytest
import torch
import yaml

from DiffIR.archs.diffir_s1_arch import DiffIRS1
from DiffIR.archs.diffir_s2_arch import DiffIRS2
from DiffIR.models.base_model import ema_decay_at
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import ema_warning, extract_state_dict, load_file

from helpers import sine_images, train_options

TINY = dict(n_encoder_res=1, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
            ffn_expansion_factor=2)


def test_ema_decay_warms_up_then_reaches_the_configured_decay():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 100000) == 0.999
    assert all(ema_decay_at(0.999, t) <= ema_decay_at(0.999, t + 1) for t in range(0, 20000, 37))
    share = 1.0
    for t in range(400):
        share *= ema_decay_at(0.999, t)
    assert share < 1e-3  # the 400 updates: without warm-up 0.999**400 = 67 % of the start remains


@pytest.mark.parametrize("cls", [DiffIRS1, DiffIRS2])
def test_untrained_network_returns_its_input_and_official_init_does_not(cls):
    lq, gt = sine_images(2, 16, 24)
    torch.manual_seed(0)
    net = cls(**TINY).eval()
    torch.manual_seed(0)
    official = cls(**TINY, identity_init=False).eval()
    args = (lq, gt) if cls is DiffIRS1 else (lq,)

    def run(n):  # stage 2 draws its start noise from the torch RNG
        torch.manual_seed(5)
        with torch.no_grad():
            return n(*args)

    assert torch.equal(run(net), lq)
    assert (run(official) - lq).abs().max() > 1e-3
    # the same random stream otherwise: every tensor but the zeroed last convolution is identical
    a, b = net.state_dict(), official.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == ["G.output.weight"]
    assert list(a) == list(b)  # same keys: official checkpoints load either way
    net.load_state_dict(b)
    assert torch.equal(run(net), run(official))


def test_identity_start_has_gradients_for_the_whole_network():
    torch.manual_seed(0)
    net = DiffIRS1(**TINY).train()
    lq, gt = sine_images(2, 16, 16)
    out, _ = net(lq, gt)
    (out - gt).abs().mean().backward()
    assert net.G.output.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt.step()
    opt.zero_grad()
    out, _ = net(lq, gt)
    (out - gt).abs().mean().backward()
    assert net.G.patch_embed.proj.weight.grad.abs().sum() > 0  # after one step the residual branch learns


def _ema_run(tmp_path, name, total_iter, **train):
    yml = train_options(tmp_path, name=name, total_iter=total_iter, **train)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"]["save_checkpoint_freq"] = 2
    opt["train"]["ema_decay"] = 0.999
    yml.write_text(yaml.safe_dump(opt))
    return yml


def test_ema_record_saved_and_resume_continues_it_exactly(tmp_path):
    yml = _ema_run(tmp_path, "emaw", 6)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    models = tmp_path / "experiments" / "emaw" / "models"
    straight = load_file(str(models / "net_g_6.pth"))
    assert straight["ema"]["updates"] == 6 and straight["ema"]["warmup"] is True
    expected = 1.0
    for t in range(6):
        expected *= ema_decay_at(0.999, t)
    assert straight["ema"]["init_share"] == pytest.approx(expected)
    state4 = load_file(str(tmp_path / "experiments" / "emaw" / "training_states" / "4.state"))
    assert state4["ema"]["updates"] == 4

    # the same run interrupted at 4 and resumed: identical EMA weights and record at 6
    yml2 = _ema_run(tmp_path, "emar", 4)
    train_pipeline(str(tmp_path), ["-opt", str(yml2)])
    train_pipeline(str(tmp_path), ["-opt", str(yml2), "--auto_resume", "--force_yml", "train:total_iter=6"])
    resumed = load_file(str(tmp_path / "experiments" / "emar" / "models" / "net_g_6.pth"))
    assert resumed["ema"] == straight["ema"]
    for k, v in straight["params_ema"].items():
        assert torch.equal(resumed["params_ema"][k], v), k


def test_without_warmup_the_few_update_ema_is_reported_where_it_is_loaded(tmp_path, records):
    yml = _ema_run(tmp_path, "noww", 4, ema_warmup=False)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    path = str(tmp_path / "experiments" / "noww" / "models" / "net_g_4.pth")
    ckpt = load_file(path)
    assert ckpt["ema"]["init_share"] == pytest.approx(0.999 ** 4)
    records.clear()
    extract_state_dict(ckpt, "params_ema", path)
    text = " ".join(r.getMessage() for r in records if r.levelno == logging.WARNING)
    assert "still hold 100% of the network's initial weights" in text and "param_key" in text
    records.clear()
    extract_state_dict(ckpt, "params", path)  # the raw weights: nothing to report
    assert not [r for r in records if r.levelno == logging.WARNING]
    # a warmed-up EMA, an official checkpoint (no record) and a long run are not reported
    assert ema_warning({"ema": {"updates": 4, "init_share": 1e-4}}, path) is None
    assert ema_warning({"params_ema": {}}, path) is None


def test_older_training_state_without_record_resumes_at_full_decay(tmp_path):
    yml = _ema_run(tmp_path, "old", 4)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    state_path = tmp_path / "experiments" / "old" / "training_states" / "4.state"
    state = load_file(str(state_path))
    del state["ema"]  # as written before the EMA record existed
    torch.save(state, state_path)
    ckpt_path = tmp_path / "experiments" / "old" / "models" / "net_g_4.pth"
    ckpt = load_file(str(ckpt_path))
    del ckpt["ema"]
    torch.save(ckpt, ckpt_path)
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=5"])
    rec = load_file(str(tmp_path / "experiments" / "old" / "models" / "net_g_latest.pth"))["ema"]
    assert rec["updates"] == 5
    assert rec["init_share"] == pytest.approx(0.999 ** 4 * ema_decay_at(0.999, 4))
