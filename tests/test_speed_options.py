"""train.amp / accum_iter / channels_last / compile fallback: same training maths, finite outputs."""
import pytest
import torch

from DiffIR.models import build_model
from DiffIR.utils.registry import OptionError

from test_training import TINY_NET


@pytest.fixture
def inductor_config():
    """``torch._inductor.config``, restored after the test.

    Not through monkeypatch: its undo hides attributes of this config module (they then raise AttributeError).
    """
    import torch._inductor.config as config

    saved = config.get_config_copy()
    yield config
    config.load_config(saved)


def _model(tmp_path, **train):
    opt = {"name": "speed", "model_type": "DiffIRS1Model", "num_gpu": 0, "is_train": True, "dist": False,
           "network_g": dict(TINY_NET), "path": {"models": str(tmp_path), "training_states": str(tmp_path)},
           "train": {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 10,
                     "pixel_opt": {"type": "L1Loss"}, **train}}
    torch.manual_seed(0)
    return build_model(opt)


def _data(n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {"lq": torch.rand(n, 3, 16, 16, generator=g), "gt": torch.rand(n, 3, 16, 16, generator=g),
            "dgain": torch.full((n,), 2.0), "gamma": torch.full((n,), 2.2)}


def _train(model, steps=4):
    losses = []
    for i in range(steps):
        model.feed_data(_data(seed=i))
        model.optimize_parameters(i + 1)
        losses.append(model.log_dict["l_pix"])
    return losses


def test_accumulation_equals_the_full_batch(tmp_path):
    full, accum = _model(tmp_path), _model(tmp_path, accum_iter=2)
    lf, la = _train(full, 2), _train(accum, 2)
    assert la == pytest.approx(lf, rel=1e-5)
    for (k, a), b in zip(full.net_g.state_dict().items(), accum.net_g.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)


def test_bf16_autocast_tracks_fp32_and_stays_finite(tmp_path):
    fp32, bf16 = _train(_model(tmp_path), 5), None
    model = _model(tmp_path, amp="bf16")
    bf16 = _train(model, 5)
    assert bf16 == pytest.approx(fp32, rel=0.05)
    model.feed_data({"lq": torch.full((1, 3, 16, 16), 1.2), "gt": torch.full((1, 3, 16, 16), 1.2)})
    model.test()
    assert torch.isfinite(model.output).all() and model.output.dtype == torch.float32


def test_fp16_uses_a_grad_scaler_saved_in_the_state(tmp_path):
    model = _model(tmp_path, amp="fp16")
    _train(model, 2)
    assert model.scaler is not None
    model.save(0, 2)
    state = torch.load(tmp_path / "2.state", weights_only=True)
    assert "scaler" in state and state["scaler"]["scale"] > 0
    again = _model(tmp_path, amp="fp16")
    again.resume_training(state)
    assert again.scaler.get_scale() == model.scaler.get_scale()


def test_channels_last_gives_the_same_step(tmp_path):
    a, b = _model(tmp_path), _model(tmp_path, channels_last=True)
    la, lb = _train(a, 2), _train(b, 2)
    assert lb == pytest.approx(la, rel=1e-4)
    assert b.lq.is_contiguous(memory_format=torch.channels_last)


def test_compile_falls_back_with_a_notice(tmp_path, monkeypatch, inductor_config):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = _model(tmp_path, compile=True)
    assert model.train_forward is model.net_g
    assert model.compiled_blocks == []
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.net_g.modules())
    assert _train(model, 1)[0] > 0


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compile_compiles_each_transformer_block_shape_once_and_trains_like_eager(tmp_path, inductor_config):
    """Regional compilation: blocks compiled in place (plain checkpoint keys, EMA and inference eager)."""
    import shutil

    import torch._dynamo

    from DiffIR.archs.dirformer import TransformerBlock

    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile needs a C++ compiler on the CPU")
    inductor_config.force_layout_optimization = False
    torch._dynamo.reset()
    eager = _model(tmp_path, ema_decay=0.9)
    model = _model(tmp_path, compile=True, ema_decay=0.9)
    blocks = [m for m in model.net_g.modules() if isinstance(m, TransformerBlock)]
    assert model.compiled_blocks == blocks and len(blocks) == 8
    assert model.train_forward is model.net_g
    assert inductor_config.force_layout_optimization  # the CPU backward-layout setting
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.net_g_ema.modules())
    before = _graphs()
    assert _train(model, 3) == pytest.approx(_train(eager, 3), rel=1e-4)
    # Five feature shapes in TINY_NET at 16x16 (8@16, 16@8, 32@4, 64@2, 16@16): one graph each, none eager.
    assert _graphs() - before == 5
    assert list(model.net_g.state_dict()) == list(eager.net_g.state_dict())
    model.net_g_ema = None  # test() then runs net_g itself, whose blocks are compiled
    model.feed_data(_data(n=1, seed=9) | {"lq": torch.rand(1, 3, 24, 24), "gt": torch.rand(1, 3, 24, 24)})
    graphs = _graphs()
    model.test()
    assert _graphs() == graphs and model.output.shape == (1, 3, 24, 24)


def test_bad_amp_value_is_reported(tmp_path):
    with pytest.raises(OptionError, match="train:amp"):
        _model(tmp_path, amp="fp8")


def test_half_precision_attention_does_not_overflow_on_large_activations():
    """|q|·|k| over H·W far exceeds float16's 65504 here: q and k must be normalised before they are multiplied."""
    from DiffIR.archs.dirformer import Attention

    torch.manual_seed(0)
    att = Attention(8, 1, bias=False, ipr_dim=4)
    x = torch.randn(1, 8, 128, 128) * 20
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = att(x, torch.ones(1, 4))
    assert torch.isfinite(out).all()


def test_compiled_bf16_attention_is_finite_and_matches_eager(inductor_config):
    """Regression: without the 256-bit limit, inductor (torch 2.13, AVX-512) turns this into NaN everywhere."""
    from DiffIR.archs.dirformer import Attention
    from DiffIR.models.base_model import avoid_inductor_cpu_half_precision_bug

    inductor_config.cpp.simdlen = None
    notice = avoid_inductor_cpu_half_precision_bug(torch.device("cpu"), torch.bfloat16)
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        assert notice and inductor_config.cpp.simdlen == 256
    assert avoid_inductor_cpu_half_precision_bug(torch.device("cpu"), None) is None
    torch.manual_seed(0)
    att = Attention(96, 2, bias=False)
    x, ipr = torch.randn(1, 96, 64, 64), torch.randn(1, 256)
    try:
        compiled = torch.compile(att)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            eager, out = att(x, ipr), compiled(x, ipr)
    except Exception as e:  # no C++ compiler on this machine: nothing to regress
        pytest.skip(f"torch.compile unavailable: {type(e).__name__}: {e}")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), eager.float(), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("batch,heads", [(1, 1), (2, 2)])
def test_channels_last_attention_is_the_same_maths_and_stays_channels_last(batch, heads):
    from DiffIR.archs.dirformer import Attention

    torch.manual_seed(0)
    att = Attention(16, heads, bias=False, ipr_dim=8)
    torch.nn.init.uniform_(att.temperature, 0.5, 2.0)
    x, ipr = torch.randn(batch, 16, 12, 8, requires_grad=True), torch.randn(batch, 8)
    ref = att(x, ipr)
    ref.square().sum().backward()
    ref_grads = [x.grad] + [p.grad.clone() for p in att.parameters()]
    att.zero_grad()

    seen = []
    att.qkv_dwconv.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0]))
    att = att.to(memory_format=torch.channels_last)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out = att(xc, ipr)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    for a, b in zip([xc.grad] + [p.grad for p in att.parameters()], ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert seen[0].is_contiguous(memory_format=torch.channels_last), "the depthwise conv got a channels-first grad"


def test_cpu_backward_layout_setting_respects_the_environment(monkeypatch, inductor_config):
    from DiffIR.models.base_model import prefer_channels_last_in_inductor_backward

    inductor_config.force_layout_optimization = False
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_LAYOUT_OPT", "0")
    assert prefer_channels_last_in_inductor_backward(torch.device("cpu")) is None
    assert not inductor_config.force_layout_optimization
    monkeypatch.delenv("TORCHINDUCTOR_FORCE_LAYOUT_OPT")
    assert prefer_channels_last_in_inductor_backward(torch.device("cuda")) is None
    assert not inductor_config.force_layout_optimization
    assert "channels-last" in prefer_channels_last_in_inductor_backward(torch.device("cpu"))
    assert inductor_config.force_layout_optimization
