"""train.amp / accum_iter / channels_last / compile fallback: same training maths, finite outputs."""
import pytest
import torch

from DiffIR.models import build_model
from DiffIR.utils.errors import OptionError

from helpers import model_options


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
    opt = model_options(tmp_path, "speed", {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 10,
                                            "pixel_opt": {"type": "L1Loss"}, **train})
    torch.manual_seed(0)
    return build_model(opt)


def _data(n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {"lq": torch.rand(n, 3, 16, 16, generator=g), "gt": torch.rand(n, 3, 16, 16, generator=g),
            "dgain": torch.full((n,), 2.0), "gamma": torch.full((n,), 2.2)}


def _train(model, steps=4, micro=1):
    """``steps`` optimizer steps on batches of 2; ``micro``: fed as that many micro-batches (as the loop hands
    ``train.accum_iter`` loader batches to the model)."""
    losses = []
    for i in range(steps):
        data = _data(seed=i)
        model.feed_data(data if micro == 1 else [{k: v[j::micro] for k, v in data.items()} for j in range(micro)])
        model.optimize_parameters(i + 1)
        losses.append(model.log_dict["l_pix"])
    return losses


def test_accumulation_equals_the_full_batch(tmp_path):
    full, accum = _model(tmp_path), _model(tmp_path, accum_iter=2)
    lf, la = _train(full, 2), _train(accum, 2, micro=2)
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


@pytest.mark.parametrize("kind,simdlen", [("amx", 256), ("avx512", 256), ("avx2", None), ("other", None)])
def test_inductor_half_precision_settings_for_every_cpu_kind(kind, simdlen, inductor_config):
    from DiffIR.models.speed import avoid_inductor_cpu_half_precision_bug

    cpu = torch.device("cpu")
    inductor_config.cpp.simdlen = None
    notice = avoid_inductor_cpu_half_precision_bug(cpu, torch.bfloat16, kind=kind)
    assert inductor_config.cpp.simdlen == simdlen
    assert (notice is not None) == (simdlen is not None)
    if notice:
        assert {"amx": "AMX", "avx512": "AVX-512"}[kind] in notice
    inductor_config.cpp.simdlen = None
    assert avoid_inductor_cpu_half_precision_bug(cpu, None, kind=kind) is None  # fp32: nothing to avoid
    assert avoid_inductor_cpu_half_precision_bug(torch.device("cuda"), torch.bfloat16, kind=kind) is None
    inductor_config.cpp.simdlen = 512  # set by the user: kept
    assert avoid_inductor_cpu_half_precision_bug(cpu, torch.bfloat16, kind=kind) is None
    assert inductor_config.cpp.simdlen == 512


@pytest.mark.parametrize("flags,capability,kind", [
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "AVX512", "amx"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "avx512"),
    ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, "AVX2", "avx2"),  # ATEN_CPU_CAPABILITY=avx2 wins
    ({"avx2"}, "AVX2", "avx2"),
    (set(), "DEFAULT", "other"),
])
def test_cpu_kind_from_flags_and_capability(flags, capability, kind):
    from DiffIR.utils.cpu_features import cpu_kind, describe_cpu

    assert cpu_kind(flags, capability) == kind
    assert cpu_kind() in ("amx", "avx512", "avx2", "other")
    assert f"kind {cpu_kind()}" in describe_cpu()


def _matmul_dtypes(fn):
    """The operand dtypes of every (b)mm that ``fn`` dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.bmm.default, torch.ops.aten.mm.default):
                self.seen.append((args[0].dtype, args[1].dtype, tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        fn()
    return rec.seen


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_runs_in_fp32_under_cpu_autocast(channels_last):
    """oneDNN's AMX bf16 matmul leaks NaN for K % 32 != 0 (head width 48): no attention matmul may run in bf16."""
    from DiffIR.archs.dirformer import Attention

    torch.manual_seed(0)
    att = Attention(16, 2, bias=False, ipr_dim=8)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    att = att.to(memory_format=fmt)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=fmt).requires_grad_()
    ipr = torch.randn(2, 8)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = att(x, ipr)
        assert out.dtype == torch.bfloat16  # project_out still runs in reduced precision
        out.float().square().sum().backward()

    bmms = [s for s in _matmul_dtypes(step) if len(s[2]) == 3]  # the attention's (the ipr Linear is an mm)
    assert len(bmms) == 6  # 2 forward + 4 backward
    assert all(a == b == torch.float32 for a, b, _ in bmms), bmms
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_compiled_bf16_attention_trains_finite_and_matches_eager(inductor_config):
    """A real compiled bf16 forward and backward of the attention on this CPU, with the settings for its kind.

    Regression: without the 256-bit limit, inductor (torch 2.13, an AVX-512 Xeon) turned the forward into NaN.
    """
    from DiffIR.archs.dirformer import Attention
    from DiffIR.models.speed import avoid_inductor_cpu_half_precision_bug
    from DiffIR.utils.cpu_features import cpu_kind

    inductor_config.cpp.simdlen = None
    notice = avoid_inductor_cpu_half_precision_bug(torch.device("cpu"), torch.bfloat16)
    assert (notice is not None) == (cpu_kind() in ("amx", "avx512"))
    torch.manual_seed(0)
    att = Attention(96, 2, bias=False)
    x, ipr = torch.randn(1, 96, 32, 32), torch.randn(1, 256)
    grads = []
    try:
        for fn in (att, torch.compile(att)):
            att.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn(x, ipr)
            out.float().square().mean().backward()
            grads.append((out.detach().float(), att.qkv.weight.grad.clone()))
    except Exception as e:  # no C++ compiler on this machine: nothing to regress
        pytest.skip(f"torch.compile unavailable: {type(e).__name__}: {e}")
    (eager, g_eager), (out, g) = grads
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    torch.testing.assert_close(out, eager, rtol=0.05, atol=0.02)
    torch.testing.assert_close(g, g_eager, rtol=0.05, atol=0.05 * g_eager.abs().max().item())


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
    from DiffIR.models.speed import prefer_channels_last_in_inductor_backward

    inductor_config.force_layout_optimization = False
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_LAYOUT_OPT", "0")
    assert prefer_channels_last_in_inductor_backward(torch.device("cpu")) is None
    assert not inductor_config.force_layout_optimization
    monkeypatch.delenv("TORCHINDUCTOR_FORCE_LAYOUT_OPT")
    assert prefer_channels_last_in_inductor_backward(torch.device("cuda")) is None
    assert not inductor_config.force_layout_optimization
    assert "channels-last" in prefer_channels_last_in_inductor_backward(torch.device("cpu"))
    assert inductor_config.force_layout_optimization


def test_cudnn_benchmark_option_is_read_and_applied_on_cuda(tmp_path):
    from DiffIR.config.sections import RunOptions
    from DiffIR.models.speed import apply_cudnn_benchmark

    def value(opt):
        return RunOptions.build(opt).cudnn_benchmark

    assert value({"train": {}}) is True  # BasicSR's default
    assert value({"train": {"cudnn_benchmark": False}}) is False
    assert value({"cudnn_benchmark": False, "train": {}}) is False  # top-level spelling
    with pytest.raises(OptionError, match="disagree"):
        value({"cudnn_benchmark": True, "train": {"cudnn_benchmark": False}})
    with pytest.raises(OptionError, match="'train:cudnn_benchmark' is 'yes'"):
        value({"train": {"cudnn_benchmark": "yes"}})
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        assert apply_cudnn_benchmark(False, torch.device("cpu")) is None
        assert torch.backends.cudnn.benchmark is True  # off CUDA: untouched
        assert apply_cudnn_benchmark(False, torch.device("cuda", 0)) is False
        assert torch.backends.cudnn.benchmark is False
        assert apply_cudnn_benchmark(True, torch.device("cuda", 0)) is True
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = saved
    with pytest.raises(OptionError, match="cudnn_benchmark"):
        _model(tmp_path, cudnn_benchmark=1)  # the model reads it at setup


def test_nonfinite_loss_under_speed_options_says_how_to_check(tmp_path):
    model = _model(tmp_path, amp="bf16", max_nonfinite_steps=5)
    assert model.backward(torch.tensor(float("nan"))) is False
    assert "bench_train.py" in model._nonfinite_hint() and "train:amp" in model._nonfinite_hint()
    assert _model(tmp_path)._nonfinite_hint() == ""


def _gpu_check():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_fails_fast_without_cuda(tmp_path, monkeypatch, capsys):
    gc = _gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main(["--out", str(tmp_path / "out")]) == 1
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_check_arguments_and_tables(tmp_path, monkeypatch):
    gc = _gpu_check()
    monkeypatch.setenv("OUT", str(tmp_path))
    args = gc.parse_args([])
    assert args.out == str(tmp_path) and args.device == "cuda" and args.demo_iters == 1200
    assert gc.parse_args(["--out", "x", "--device", "cpu", "--tiny"]).tiny
    with pytest.raises(SystemExit):
        gc.parse_args(["--demo-iters", "0"])
    result = {"batch": 2, "size": 256, "device": "NVIDIA H200", "torch": "2.13.0", "memory": "peak MB", "modes": [
        {"mode": "fp32", "status": "ok", "detail": "", "img_s": 10.0, "ms": 200.0, "speedup": 1.0, "mem_mb": 9000.0,
         "wall_s": 9.0, "dloss": 0.0},
        {"mode": "bf16+compile", "status": "ok", "detail": "", "img_s": 25.0, "ms": 80.0, "speedup": 2.5,
         "mem_mb": None, "wall_s": 90.0, "dloss": 3e-5},
        {"mode": "bf16", "status": "non-finite", "detail": "NON-FINITE loss at iteration 2"}]}
    table = "\n".join(gc.bench_table(result))
    assert "| bf16+compile | 25.00 | 80 | 2.50× | - | 3.0e-05 | ok |" in table
    assert "| bf16 | - | - | - | - | - | **NON-FINITE loss at iteration 2** |" in table
    assert "timed out" in gc.bench_table({"batch": 8, "size": 512, "error": "timed out after 150 s"})[0]
    log = ("[gpu_check_de..][epoch:  3, iter:     600, lr:(1.000e-03)] [eta: 0:00:10, time (data): 0.041 (0.002)] "
           "l_pix: 1.0e-02\n[...][epoch:  5, iter:   1,200, lr:(1.000e-05)] [eta: 0:00:00, time (data): 0.040 (0.001)]"
           "\nValidation DemoVal, iter 1200\n\t # psnr: 28.9500\tBest: 28.9500 @ 1200 iter\t(input: 21.1000)\n")
    parsed = gc.parse_demo_log(log)
    assert parsed == {"step_s": 0.04, "data_s": 0.001, "last_iter": 1200, "psnr": 28.95, "psnr_input": 21.1}
    demo = "\n".join(gc.demo_table({"iters": 1200, "wall_s": 100.0, "status": "ok", **parsed}))
    assert "| 1200 | 100 | 12.00 | 0.040 | 0.001 | psnr 28.95 (input 21.10) | ok |" in demo


def test_the_loop_hands_accum_iter_micro_batches_to_the_model(tmp_path, monkeypatch):
    """train.accum_iter loader batches per step reach the model as a list, each whole (nothing joined and split)."""
    import yaml

    from DiffIR.models.diffir_s1_model import DiffIRS1Model
    from DiffIR.train_pipeline_hdr import train_pipeline
    from helpers import train_options

    fed = []
    real = DiffIRS1Model.feed_data

    def record(self, data):
        fed.append([b["lq"].shape[0] for b in data] if isinstance(data, list) else "one")
        return real(self, data)

    monkeypatch.setattr(DiffIRS1Model, "feed_data", record)
    yml = train_options(tmp_path, name="acc", total_iter=2)
    opt = yaml.safe_load(yml.read_text())
    opt["train"]["accum_iter"] = 2
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    batch = opt["datasets"]["train"]["batch_size_per_gpu"]
    assert fed[:2] == [[batch, batch], [batch, batch]] and set(fed[2:]) == {"one"}  # then validation, per image
