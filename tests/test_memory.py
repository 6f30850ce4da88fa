"""Memory you can plan with, and out of memory said clearly (simulated: no test allocates a device full)."""
import pytest
import torch
import yaml

import DiffIR.models.memory as memory
from DiffIR.models.diffir_s1_model import DiffIRS1Model
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.cli import run_cli
from DiffIR.utils.errors import OutOfMemory

from helpers import train_options

GB = 2 ** 30


def test_the_estimates_meet_the_planning_targets():
    """With the measured coefficients: the guide's 8 x 512² fits an 80 GB GPU with bf16 and checkpointing, the
    fork's 2 x 256² a 12 GB one; checkpointing keeps at most 0.35x of the activations."""
    net = memory.OFFICIAL_NET
    guide, fork = 8 * 512 * 512, 2 * 256 * 256
    assert memory.estimate_step_bytes(net, guide, "bf16", 1) < 80 * GB < memory.estimate_step_bytes(net, guide)
    assert memory.estimate_step_bytes(net, fork, "bf16", 1) < 12 * GB
    for amp in ("none", "bf16"):
        assert memory.estimate_step_bytes(net, fork, amp, 1) <= 0.35 * memory.estimate_step_bytes(net, fork, amp, 0)
    assert memory.activation_units({"dim": 48, "num_blocks": [4, 6, 6, 8], "num_refinement_blocks": 4}) == 1440
    fits = memory.fitting_settings(net, 80 * GB, 8, 512)
    assert fits and all(memory.estimate_step_bytes(net, b * p * p, "bf16", 1) <= 80 * GB for _, b, p in fits)
    assert memory.fitting_settings(net, 1 * GB, 8, 512)[0][1:] < (8, 512)  # smaller batches or patches


def _oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_a_training_step_is_one_message_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(DiffIRS1Model, "optimize_parameters", _oom)
    yml = train_options(tmp_path, name="oom", total_iter=4)
    with pytest.raises(OutOfMemory) as info:
        train_pipeline(str(tmp_path), ["-opt", str(yml)])
    text = str(info.value)
    assert "Out of memory on cpu in training iteration 1" in text
    assert "batch 2 x 32² per GPU, train:amp none, train:grad_checkpoint off" in text
    assert "of the device's" in text and "Fix:" in text and "last saved checkpoint is intact" in text
    assert not list((tmp_path / "experiments" / "oom" / "training_states").glob("*.state"))  # nothing written
    assert run_cli(lambda: train_pipeline(str(tmp_path), ["-opt", str(yml)])) == 3  # the CLI: one line, exit 3


def test_out_of_memory_in_validation_and_test_points_to_tiling(tmp_path, monkeypatch):
    yml = train_options(tmp_path, name="voom", total_iter=2)
    monkeypatch.setattr(DiffIRS1Model, "test", _oom)
    with pytest.raises(OutOfMemory, match="in the validation of V: .* Fix: set val:tile_size"):
        train_pipeline(str(tmp_path), ["-opt", str(yml)])
    opt = yaml.safe_load(yml.read_text())
    opt["val"].update(tile_size=16, tile_overlap=4)
    yml.write_text(yaml.safe_dump(opt))
    with pytest.raises(OutOfMemory, match="val:tile_size is 16: use a smaller one"):
        train_pipeline(str(tmp_path), ["-opt", str(yml)])


def test_out_of_memory_in_test_py(tmp_path, monkeypatch):
    from DiffIR import test_pipeline as tp
    from test_evaluation import _test_yml, _weights

    yml = _test_yml(tmp_path, _weights(tmp_path), save_img=False)
    monkeypatch.setattr(DiffIRS1Model, "test", _oom)
    with pytest.raises(OutOfMemory, match="in test set .*val:tile_size is 24: use a smaller one"):
        tp.test_pipeline(str(tmp_path), ["-opt", yml])


def test_a_cpu_run_is_warned_before_its_first_step_when_the_step_will_not_fit(tmp_path, monkeypatch, records):
    monkeypatch.setattr(memory, "available_memory", lambda device: 1e3)  # 1 kB free
    train_pipeline(str(tmp_path), ["-opt", str(train_options(tmp_path, name="short", total_iter=1))])
    warned = [r.getMessage() for r in records if "may swap or be killed" in r.getMessage()]
    assert len(warned) == 1 and "batch 2 x 32² per GPU" in warned[0]


def test_other_runtime_errors_are_not_taken_for_out_of_memory():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with memory.out_of_memory_stops(lambda: "never"):
            raise RuntimeError("shape mismatch")
    with pytest.raises(OutOfMemory, match="said"):
        with memory.out_of_memory_stops(lambda: "said"):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
