"""What every training model shares: devices, DDP, optimizers, schedulers, EMA, speed options, validation.

Checkpoints (saving, pruning, resume) come from :class:`~DiffIR.models.checkpointing.CheckpointingMixin`.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from DiffIR.metrics import check_metric_options, improves
from DiffIR.models.checkpointing import CheckpointingMixin
from DiffIR.archs.dirformer import set_grad_checkpointing
from DiffIR.config.sections import RunOptions
from DiffIR.models.evaluation import ValidationResult, evaluate_dataset, publish_previews
from DiffIR.models.lr_scheduler import build_scheduler, get_scheduler, update_learning_rate
from DiffIR.models.speed import apply_cudnn_benchmark, compile_for_training, repeated_blocks
from DiffIR.utils.cpu_features import cpu_kind
from DiffIR.utils.dist import all_finite, get_dist_info, local_rank, reduce_mean
from DiffIR.utils.logger import get_root_logger
from DiffIR.utils.errors import TrainingStopped
from DiffIR.utils.misc import select_device
from DiffIR.utils.registry import check_kwargs, lookup

_OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}


def nonfinite_terms(terms: Optional[Mapping[str, torch.Tensor]]) -> List[str]:
    """The loss terms (``l_pix``, ``l_pu21``, ``l_kd_3``, ...) that are non-finite on any rank, in the order they
    were computed, each with this rank's value: the first is where to look when a run diverges.

    Under DDP every rank holds the same terms in the same order, so one all-reduce of their flags lets each rank
    name a term that went non-finite on another one.
    """
    if not terms:
        return []
    values = [v.detach() for v in terms.values()]
    flags = torch.stack([(~torch.isfinite(v)).any().to(torch.float32) for v in values])
    anywhere = reduce_mean(flags) > 0
    return [f"{name} = {v.float().sum().item():g}" if here else f"{name} (on another rank)"
            for name, v, here, flag in zip(terms, values, flags.tolist(), anywhere.tolist()) if flag]


def ema_decay_at(decay: float, updates: int) -> float:
    """The warmed-up EMA decay of update number ``updates`` (0-based): ``min(decay, (1 + t) / (10 + t))``.

    The ramp of timm's and diffusers' EMA: the first update keeps 10 % of the old weights, the 100th 8 %, and
    the full decay applies from t ≈ 9/(1 − decay) (9 000 updates at 0.999). Without it, after n updates the EMA
    still holds decay^n of the random initialisation (67 % after 400 updates at 0.999).
    """
    return min(float(decay), (1.0 + updates) / (10.0 + updates))


class BaseModel(CheckpointingMixin):
    """BasicSR-compatible model base. Subclasses build ``net_g`` and implement feed/optimize/test."""

    def __init__(self, opt: Dict[str, Any], options: Optional[RunOptions] = None) -> None:
        self.opt = opt
        self.options = options if options is not None else RunOptions.build(opt)  # checked once, typed
        context = self.options.context
        self.device = select_device(context.num_gpu, local_rank() if context.dist else None)
        self.is_train = context.is_train
        self.optimizers: List[torch.optim.Optimizer] = []
        self.schedulers: List[Any] = []
        self.log_dict: Dict[str, float] = OrderedDict()
        self.best_metric_results: Dict[str, Dict[str, Dict[str, float]]] = {}
        self.best_checkpoint: Optional[Dict[str, Any]] = None  # the record in models/net_g_best.pth (val.save_best)
        self._baseline_cache: Dict[str, Dict[str, float]] = {}
        self.logger = get_root_logger()
        self.net_g_ema: Optional[nn.Module] = None  # set by subclasses when train:ema_decay > 0
        self.ema_decay = 0.0
        self.ema_warmup = True  # train:ema_warmup
        self.ema_updates = 0  # EMA updates so far (saved in checkpoints and training states)
        self.ema_init_share = 1.0  # share of the starting weights still in the EMA: the product of the decays
        # Speed options off: a model for inference keeps these; a training model reads train:* below.
        self.amp_dtype: Optional[torch.dtype] = None
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.channels_last = False
        self.use_compile = False
        self.grad_checkpoint = 0  # train:grad_checkpoint: every N-th transformer block recomputed (0: off)
        self.compiled_blocks: List[nn.Module] = []
        self._nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._nonfinite_first = ""  # the culprit of the first step of the current run of non-finite steps
        check_metric_options(self.options.val.metrics)
        if self.is_train:
            self.setup_speed_options()

    # ----------------------------------------------------------------------------- networks
    def model_to_device(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.options.context.dist:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids,
                                          find_unused_parameters=self.options.top.find_unused_parameters)
        return net

    @staticmethod
    def get_bare_model(net: nn.Module) -> nn.Module:
        return net.module if isinstance(net, (DistributedDataParallel, nn.DataParallel)) else net

    def print_network(self, net: nn.Module) -> None:
        bare = self.get_bare_model(net)
        n = sum(p.numel() for p in bare.parameters())
        self.logger.info(f"Network: {bare.__class__.__name__}, with parameters: {n:,d}")

    # ----------------------------------------------------------------------------- EMA
    @torch.no_grad()
    def model_ema(self, decay: float) -> None:
        """ema ← d·ema + (1 − d)·net over named parameters (buffers are not averaged, as in BasicSR).

        d is ``decay``, or with ``train.ema_warmup`` (default) :func:`ema_decay_at` of the update count, so that
        the EMA of a short run averages the trained weights instead of keeping most of the initialisation.
        """
        d = ema_decay_at(decay, self.ema_updates) if self.ema_warmup else decay
        net = dict(self.get_bare_model(self.net_g).named_parameters())
        ema = dict(self.net_g_ema.named_parameters())
        keys = list(ema)
        torch._foreach_lerp_([ema[k].data for k in keys], [net[k].data for k in keys], 1.0 - d)
        self.ema_updates += 1
        self.ema_init_share *= d

    def ema_record(self) -> Dict[str, Any]:
        """What a checkpoint says about its EMA weights: plain numbers, read back by resume and by the
        few-updates warning of :func:`~DiffIR.utils.checkpoint.extract_state_dict`."""
        return {"updates": self.ema_updates, "init_share": self.ema_init_share, "decay": self.ema_decay,
                "warmup": self.ema_warmup}

    def restore_ema_record(self, record: Optional[Dict[str, Any]], current_iter: int) -> None:
        """Continue the EMA schedule of a resumed run; a state without a record (an older run, no warm-up) had
        one update per iteration at the full decay."""
        if record:
            self.ema_updates = int(record["updates"])
            self.ema_init_share = float(record["init_share"])
        else:
            self.ema_updates = int(current_iter)
            self.ema_init_share = float(self.ema_decay) ** int(current_iter)

    # ----------------------------------------------------------------------------- optim / schedule
    def build_optimizer(self, opt: Dict[str, Any], params, where: str = "train:optim_g") -> torch.optim.Optimizer:
        opt = dict(opt)
        cls = lookup(_OPTIMIZERS, opt.pop("type", None), "optimizer", f"{where}:type")
        check_kwargs(cls, opt, where)
        if "betas" in opt:
            opt["betas"] = tuple(opt["betas"])
        return cls(params, **opt)

    def setup_schedulers(self) -> None:
        """A ``train:scheduler`` for each optimizer, after :meth:`check_schedule`."""
        sched_opt = self.check_schedule()
        if sched_opt:
            self.schedulers = [build_scheduler(o, sched_opt) for o in self.optimizers]

    def check_schedule(self) -> Dict[str, Any]:
        """Record each parameter group's ``initial_lr`` (BasicSR's warm-up scales from it) and check
        ``train:scheduler`` against the scheduler's signature; returns the scheduler options ({} for none)."""
        sched_opt = dict(self.options.train.scheduler)
        for o in self.optimizers:
            for g in o.param_groups:
                g.setdefault("initial_lr", g["lr"])
        if sched_opt:
            cls = get_scheduler(sched_opt.get("type"), "train:scheduler:type")
            check_kwargs(cls, {k: v for k, v in sched_opt.items() if k != "type"}, "train:scheduler")
        return sched_opt

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR order: step the schedulers from iteration 2 on, then let ``warmup_iter`` override linearly."""
        update_learning_rate(self.optimizers, self.schedulers, current_iter, warmup_iter)

    def get_current_learning_rate(self) -> List[float]:
        return [g["lr"] for g in self.optimizers[0].param_groups]

    # ----------------------------------------------------------------------------- speed options
    def setup_speed_options(self) -> None:
        """``train.amp`` (bf16|fp16|none), ``train.compile``, ``train.channels_last`` (``train.accum_iter`` is the
        loop's: it hands the model that many micro-batches per step)."""
        speed = self.options.train.speed
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[speed.amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if speed.amp == "fp16" else None
        self.channels_last = speed.channels_last
        self.use_compile = speed.compile
        self.grad_checkpoint = speed.grad_checkpoint
        apply_cudnn_benchmark(self.options.cudnn_benchmark, self.device)
        if self.amp_dtype is not None and self.device.type == "cpu":
            self.logger.info(f"train:amp on the CPU ({cpu_kind()}): the DIRformer attention (norms, matmuls, "
                             "softmax) runs in fp32, the convolutions in reduced precision.")

    def autocast(self):
        """Mixed-precision context for the training forward (a no-op without ``train.amp``)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_input(self, t: torch.Tensor) -> torch.Tensor:
        """Move an input batch to the device (channels-last when that option is on)."""
        t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def prepare_training_network(self, net: nn.Module) -> nn.Module:
        """The callable used for training forwards: ``net`` itself, or with ``train.compile`` compiled
        (:func:`~DiffIR.models.speed.compile_for_training`: regionally where the network declares
        ``repeated_blocks``). ``train.grad_checkpoint`` is set on the network first (a block checkpointed and
        compiled in place runs its compiled graph again in the backward pass)."""
        if self.grad_checkpoint:
            count = set_grad_checkpointing(self.get_bare_model(net), self.grad_checkpoint)
            self.logger.info(f"train:grad_checkpoint: {count} transformer blocks are recomputed in the backward pass "
                             "instead of keeping their activations.")
            if not count:
                self.logger.warning("train:grad_checkpoint is set, but the network has no transformer blocks to "
                                    "checkpoint: it has no effect.")
        if not self.use_compile:
            return net
        blocks = repeated_blocks(self.get_bare_model(net))
        train_forward, self.compiled_blocks = compile_for_training(net, blocks, self.device, self.amp_dtype,
                                                                   self.logger)
        return train_forward

    def eager_inference(self) -> contextlib.AbstractContextManager:
        """Context for validation/test forwards: compiled blocks run eagerly there.

        Their graphs are built for training (grad mode, patch shapes); whole validation images in eval mode would
        only add graphs, one compilation per new image size.
        """
        if self.compiled_blocks:
            return torch.compiler.set_stance("force_eager")
        return contextlib.nullcontext()

    def no_sync(self, net: nn.Module, last: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if not last and isinstance(net, DistributedDataParallel):
            return net.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, weight: float = 1.0,
                 terms: Optional[Mapping[str, torch.Tensor]] = None) -> bool:
        """``(loss·weight).backward()`` — unless the loss is non-finite on any rank (then nothing happens).

        ``terms``: the loss terms that ``loss`` was summed from (the log's names), so that the warning and the stop
        name the one that went non-finite first. ``train.max_nonfinite_steps`` (default 10) non-finite steps in a
        row stop training with :class:`TrainingStopped`, leaving the last good checkpoint untouched.
        """
        if not all_finite(loss):
            self._nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            limit = self.options.train.max_nonfinite_steps
            culprit = self._nonfinite_culprit(terms)
            if self._nonfinite_in_a_row == 1:
                self._nonfinite_first = culprit  # the start of this run of bad steps: what the stop reports
            self.logger.warning(f"Non-finite loss ({loss.item()}): {culprit + '; ' if culprit else ''}step skipped "
                                f"({self._nonfinite_in_a_row} in a row, {self.nonfinite_total} in total)."
                                + self._nonfinite_hint())
            if self._nonfinite_in_a_row >= limit:
                raise TrainingStopped(
                    f"The loss was non-finite {limit} iterations in a row (train:max_nonfinite_steps); in the first "
                    f"of them, {self._nonfinite_first or 'no loss terms were known'}. Training diverged and was "
                    "stopped; the last saved checkpoint is unchanged. Lower the learning rate (or that term's "
                    "loss_weight), set train:grad_clip, or check the data (scripts/check_dataset.py).")
            return False
        loss = loss * weight
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return True

    @staticmethod
    def _nonfinite_culprit(terms: Optional[Mapping[str, torch.Tensor]]) -> str:
        """``'l_fft = nan went non-finite first (then: l_ssim = nan)'`` for the warning and the stop; empty
        without terms."""
        if not terms:
            return ""
        bad = nonfinite_terms(terms)
        if not bad:
            return f"every term was finite ({', '.join(terms)}), their weighted sum was not"
        return f"{bad[0]} went non-finite first" + (f" (then: {', '.join(bad[1:])})" if bad[1:] else "")

    def _nonfinite_hint(self) -> str:
        """For a non-finite loss under the speed options: how to tell them from a diverging run."""
        amp, compiled = self.amp_dtype is not None, self.use_compile
        if not (amp or compiled):
            return ""
        used = " and ".join(k for k, on in (("train:amp", amp), ("train:compile", compiled)) if on)
        return (f" With {used} on this machine ({self.device.type}"
                + (f", {cpu_kind()}" if self.device.type == "cpu" else "") + "), compare with "
                "`python benchmarks/bench_train.py --modes bf16 bf16+compile`; if only those modes are non-finite, "
                "train without them.")

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optional ``train.grad_clip``, then the (GradScaler-aware) optimizer step."""
        self._nonfinite_in_a_row = 0
        clip = self.options.train.grad_clip
        if clip:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def reduce_loss_dict(self, loss_dict: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Average each loss over ranks for the log."""
        with torch.no_grad():
            return OrderedDict((k, float(reduce_mean(v.detach()).item())) for k, v in loss_dict.items())

    def get_current_log(self) -> Dict[str, float]:
        return self.log_dict

    # ----------------------------------------------------------------------------- validation
    def validation(self, dataloader, current_iter: int, save_img: bool = False) -> ValidationResult:
        """Validate on rank 0 (other ranks return an empty result at once; the EMA/bare network needs no collective
        calls)."""
        rank, _ = get_dist_info()
        if rank != 0:
            return ValidationResult(dataloader.dataset.opt.get("name", "val"))
        return self.nondist_validation(dataloader, current_iter, save_img)

    def nondist_validation(self, dataloader, current_iter: int, save_img: bool) -> ValidationResult:
        """Score one val set with the shared evaluation loop (the one ``test.py`` runs), log it and keep bests.

        The input's own scores (the baseline) are computed once per val set and cached (and returned the time they
        are computed). With ``save_img`` the outputs go to ``visualization/<set>/<stem>_<iter>.<save_format>`` plus
        PNG previews. Every validation writes the first ``val.num_preview_images`` images as one grid,
        ``visualization/<set>/preview_<iter>.png``, returned for the run's sinks.
        """
        dataset_name = dataloader.dataset.opt.get("name", "val")
        want_baseline = self.options.val.baseline and dataset_name not in self._baseline_cache
        folder = osp.join(self.options.context.paths.visualization, dataset_name)
        save_dir = folder if save_img else None
        res = evaluate_dataset(self, dataloader, self.options.val, baseline=want_baseline, save_dir=save_dir,
                               suffix=str(current_iter), desc=f"Validate {dataset_name}")
        preview = publish_previews(res, folder, str(current_iter))
        if not res.metrics:
            return ValidationResult(dataset_name, preview=preview)
        new_baseline = res.baseline if want_baseline else {}
        if new_baseline:
            self._baseline_cache[dataset_name] = new_baseline
        self._log_validation(dataset_name, current_iter, res.metrics)
        return ValidationResult(dataset_name, res.metrics, new_baseline, preview)

    def baseline_results(self, dataset_name: str) -> Dict[str, float]:
        """Metrics of the network input itself (the plain inverse tone mapping of the LDR) on a val set."""
        return self._baseline_cache.get(dataset_name, {})

    def _log_validation(self, dataset_name: str, current_iter: int, results: Dict[str, float]) -> None:
        metrics = self.options.val.metrics
        best = self.best_metric_results.setdefault(dataset_name, {})
        base = self._baseline_cache.get(dataset_name, {})
        msg = f"Validation {dataset_name}, iter {current_iter}"
        for name, value in results.items():
            rec = best.get(name)
            if rec is None or improves(value, rec["val"], metrics[name]):
                best[name] = {"val": value, "iter": current_iter}
            msg += (f"\n\t # {name}: {value:.4f}\tBest: {best[name]['val']:.4f} @ {best[name]['iter']} iter"
                    + (f"\t(input: {base[name]:.4f})" if name in base else ""))
        self.logger.info(msg)
