"""train.grad_checkpoint: the transformer blocks recomputed in the backward pass — same maths, less kept."""
import pytest
import torch

from DiffIR.archs import build_network
from DiffIR.archs.dirformer import set_grad_checkpointing
from DiffIR.models import build_model
from DiffIR.utils.errors import OptionError

from helpers import TINY_NET, TINY_S2, model_options

NET = dict(TINY_NET, num_blocks=[2, 2, 2, 2], num_refinement_blocks=2)  # 16 blocks in 8 stacks of 2: every 2nd is 8


def _model(tmp_path, net=NET, **train):
    opt = model_options(tmp_path, "gc", {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 10,
                                         "pixel_opt": {"type": "L1Loss"}, **train})
    opt["network_g"] = dict(net)
    torch.manual_seed(0)
    return build_model(opt)


def _batch(seed, n=2, size=16):
    g = torch.Generator().manual_seed(seed)
    return {"lq": torch.rand(n, 3, size, size, generator=g), "gt": torch.rand(n, 3, size, size, generator=g),
            "dgain": torch.full((n,), 2.0), "gamma": torch.full((n,), 2.2)}


def _train(model, steps=3, micro=1):
    losses = []
    for i in range(steps):
        data = _batch(i)
        model.feed_data(data if micro == 1 else [{k: v[j::micro] for k, v in data.items()} for j in range(micro)])
        model.optimize_parameters(i + 1)
        losses.append(model.log_dict["l_pix"])
    return losses


@pytest.mark.parametrize("every, micro", [(True, 1), (2, 1), (True, 2)])
def test_fp32_losses_and_weights_equal_the_run_without_it(tmp_path, every, micro):
    plain, ckpt = _model(tmp_path, accum_iter=micro), _model(tmp_path, grad_checkpoint=every, accum_iter=micro)
    stacks = [m for m in ckpt.net_g.modules() if type(m).__name__ == "BlockStack"]
    assert stacks and all(s.checkpoint_every == int(every) for s in stacks)
    assert _train(ckpt, micro=micro) == pytest.approx(_train(plain, micro=micro), abs=1e-6)
    for (k, a), b in zip(plain.net_g.state_dict().items(), ckpt.net_g.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=k)
    for a, b in zip(plain.net_g_ema.state_dict().values(), ckpt.net_g_ema.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_the_kept_activations_shrink_and_inference_is_untouched():
    """What the forward keeps for the backward (autograd's saved tensors), with and without checkpointing."""
    torch.manual_seed(0)
    net = build_network(dict(NET, type="DiffIRS1"), "network_g")
    lq, gt = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)

    def kept_bytes():
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, _ = net(lq, gt)
        return total[0], out

    full, out_full = kept_bytes()
    assert set_grad_checkpointing(net, 1) == 16 and set_grad_checkpointing(net, 2) == 8
    set_grad_checkpointing(net, 1)
    checkpointed, out_ckpt = kept_bytes()
    assert checkpointed < 0.35 * full, (checkpointed, full)
    torch.testing.assert_close(out_ckpt, out_full, rtol=0, atol=0)
    with torch.no_grad():  # no gradients recorded: nothing to checkpoint, the plain forward
        torch.testing.assert_close(net(lq, gt)[0], out_full, rtol=0, atol=0)
    assert set_grad_checkpointing(net, 0) == 0 and kept_bytes()[0] == full


def test_stage2_and_bf16_train_with_it(tmp_path):
    bf16 = _model(tmp_path, grad_checkpoint=True, amp="bf16")
    assert all(torch.isfinite(torch.tensor(v)) for v in _train(bf16, steps=2))
    teacher = tmp_path / "s1.pth"
    s1 = build_network(dict(TINY_NET), "network_g")
    torch.save({"params": s1.state_dict(), "params_ema": s1.state_dict()}, teacher)
    opt = model_options(tmp_path, "gc2", {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 4,
                                          "pixel_opt": {"type": "L1Loss"}, "grad_checkpoint": True,
                                          "kd_opt": {"type": "KDLoss", "loss_weight": 1, "temperature": 0.15},
                                          "encoder_iter": 1, "lr_encoder": 2e-4, "lr_sr": 2e-4, "gamma_encoder": 0.1,
                                          "gamma_sr": 0.5, "lr_decay_encoder": 10, "lr_decay_sr": 10})
    opt.update(model_type="DiffIRS2Model", network_g=dict(TINY_S2), network_S1=dict(TINY_NET))
    opt["path"].update(pretrain_network_S1=str(teacher), param_key_S1="params")
    torch.manual_seed(0)
    s2 = build_model(opt)
    assert _train(s2, steps=2)[-1] > 0  # phase 1 (the prior only), then phase 2 through the checkpointed blocks


def test_bad_values_are_refused_by_name(tmp_path):
    with pytest.raises(OptionError, match="'train:grad_checkpoint' is 'yes'"):
        _model(tmp_path, grad_checkpoint="yes")
    with pytest.raises(OptionError, match="grad_checkpoint"):
        _model(tmp_path, grad_checkpoint=-1)


def test_compiled_blocks_checkpointed_train_as_without_it(tmp_path):
    """train.compile compiles the blocks in place; checkpointed, their graphs run again in the backward pass."""
    plain, ckpt = _model(tmp_path, compile=True), _model(tmp_path, compile=True, grad_checkpoint=True)
    assert _train(ckpt, steps=2) == pytest.approx(_train(plain, steps=2), abs=1e-6)
    for (k, a), b in zip(plain.net_g.state_dict().items(), ckpt.net_g.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=k)
