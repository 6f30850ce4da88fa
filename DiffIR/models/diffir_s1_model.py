"""DiffIR stage 1: CPEN sees LQ and GT, DIRformer restores; L1 (+ optional perceptual) loss, EMA."""
from __future__ import annotations

import contextlib
import copy
import inspect
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from DiffIR.archs import build_network
from DiffIR.config.sections import RunOptions
from DiffIR.losses import build_loss
from DiffIR.models.base_model import BaseModel
from DiffIR.models.region_weights import RegionWeights, training_tone_domain
from DiffIR.models.self_ensemble import self_ensemble
from DiffIR.models.tiling import tiled_forward
from DiffIR.utils.img_util import pad_to_multiple
from DiffIR.utils.errors import MissingInputError, OptionError
from DiffIR.utils.registry import MODEL_REGISTRY

#: (target, estimate) of a prior loss: stage 2's teacher IPR and the student's final IPR
PriorPair = Tuple[torch.Tensor, torch.Tensor]
#: what :meth:`DiffIRS1Model.train_step` needs of one micro-batch: (detached output or None, loss, losses to log)
ChunkLosses = Tuple[Optional[torch.Tensor], torch.Tensor, Dict[str, torch.Tensor]]
#: (lq, gt, cond) of one micro-batch, on the device
MicroBatch = Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


class MixingAugment:
    """Restormer's mixup: blend each sample with a random other one (same λ for LQ, GT and conditions)."""

    def __init__(self, mixup_beta: float = 1.2, use_identity: bool = True) -> None:
        self.dist = torch.distributions.Beta(torch.tensor([float(mixup_beta)]), torch.tensor([float(mixup_beta)]))
        self.use_identity = use_identity

    def __call__(self, *tensors: torch.Tensor):
        if self.use_identity and torch.randint(0, 2, (1,)).item() == 1:
            return tensors
        lam = self.dist.rsample((1, 1)).item()
        index = torch.randperm(tensors[0].size(0), device=tensors[0].device)
        return tuple(None if t is None else lam * t + (1 - lam) * t[index] for t in tensors)


@MODEL_REGISTRY.register()
class DiffIRS1Model(BaseModel):
    """Stage-1 model; the network's prior needs the GT, so validation is an oracle figure."""

    #: inference needs the HDR ground truth (the prior's input); test.py refuses test sets without one
    needs_gt_for_inference = True

    def __init__(self, opt: Dict[str, Any], options: Optional[RunOptions] = None) -> None:
        super().__init__(opt, options)
        if "network_g" not in opt:
            raise OptionError("DiffIRS1Model needs a 'network_g' section")
        self.net_g = self.model_to_device(build_network(opt["network_g"], "network_g"))
        self.print_network(self.net_g)
        weights = self.options.path.weights("g")
        self._pretrain_path = weights.path
        if self._pretrain_path:
            self.load_network(self.net_g, self._pretrain_path, weights.strict, weights.param_key)
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self) -> None:
        """EMA copy, training forward (compiled with train.compile), losses from every ``*_opt``, optimizer."""
        train = self.options.train
        self.net_g.train()
        self.ema_decay = train.ema_decay
        self.ema_warmup = train.ema_warmup
        if self.ema_decay > 0:  # copied before train.compile compiles blocks of net_g in place: the EMA stays eager
            self.net_g_ema = copy.deepcopy(self.get_bare_model(self.net_g)).to(self.device)
            if self._pretrain_path:
                self.load_network(self.net_g_ema, self._pretrain_path, self.options.path.weights("g").strict,
                                  "params_ema")
            self.net_g_ema.eval()
            for p in self.net_g_ema.parameters():
                p.requires_grad_(False)
        self.train_forward = self.prepare_training_network(self.net_g)
        if not train.losses:
            raise OptionError("train has no loss: add e.g. 'pixel_opt: {type: L1Loss, loss_weight: 1.0}'")
        self.losses = OrderedDict((key, build_loss(dict(value), f"train:{key}").to(self.device))
                                  for key, value in self.image_loss_options().items())
        self._setup_region_weights(train.region_weights)
        mix = train.mixing_augs
        self.mixing = (MixingAugment(mix.get("mixup_beta", 1.2), mix.get("use_identity", True)) if mix.get("mixup")
                       else None)
        if not train.optim_g:
            raise OptionError("train needs 'optim_g', e.g. {type: Adam, lr: 2e-4}")
        self.setup_optimizers()
        self.setup_schedulers()

    def image_loss_options(self) -> Dict[str, Any]:
        """The ``train:*_opt`` sections of the losses on the restored image (stage 2 keeps its KD loss apart)."""
        return dict(self.options.train.losses)

    def setup_optimizers(self) -> None:
        """``optimizer_g`` over every trainable parameter (stage 2 adds the prior branch's own optimizer)."""
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = self.build_optimizer(self.options.train.optim_g, params)
        self.optimizers.append(self.optimizer_g)

    def _setup_region_weights(self, region: Any) -> None:
        """Give the losses that work in linear HDR the training set's tone domain; build ``train.region_weights``
        and note which losses take per-pixel weights (those whose ``forward`` has a ``weight`` argument)."""
        curve, hdr_max, linearize = training_tone_domain(self.opt)
        for loss_fn in self.losses.values():
            if getattr(loss_fn, "needs_tone_domain", False):
                loss_fn.set_tone_domain(curve, hdr_max)
        self.weighted_losses = {key for key, loss_fn in self.losses.items()
                                if "weight" in inspect.signature(loss_fn.forward).parameters}
        self.region_weights = None
        if region is not None and region is not False:
            self.region_weights = RegionWeights(region, curve, hdr_max, linearize)
            if not self.weighted_losses:
                raise OptionError("train:region_weights weighs pixel losses, but none of the configured losses takes "
                                  "per-pixel weights. Fix: add e.g. 'pixel_opt: {type: L1Loss}' (L1Loss, MSELoss, "
                                  "CharbonnierLoss and PU21Loss take them) or remove region_weights.")

    def feed_data(self, data: Union[Dict[str, Any], Sequence[Dict[str, Any]]]) -> None:
        """One batch (BasicSR's call), or the micro-batches of one optimizer step (``train.accum_iter`` loader
        batches, which the training loop hands over as a list; each is mixed on its own, as a batch is).
        ``lq``/``gt``/``cond`` are the first micro-batch: what the previews show."""
        self.micro = [self._prepare(d) for d in ([data] if isinstance(data, Mapping) else data)]
        self.lq, self.gt, self.cond = self.micro[0]

    def _prepare(self, data: Mapping[str, Any]) -> MicroBatch:
        lq = self.to_input(data["lq"])
        gt = self.to_input(data["gt"]) if "gt" in data else None
        cond = None
        if "dgain" in data and "gamma" in data:
            cond = torch.stack([data["dgain"], data["gamma"]], dim=1).float().to(self.device)
        if self.is_train and self.mixing is not None and self.net_g.training:
            lq, gt, cond = self.mixing(lq, gt, cond)
        return lq, gt, cond

    def _forward(self, net: Callable[..., Any], lq: torch.Tensor, gt: torch.Tensor, cond: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, Optional[PriorPair]]:
        """Training forward: the restored batch and the (target, estimate) prior pair :meth:`compute_losses`
        compares; stage 1 has no prior target (its prior is built from the GT), so the pair is None."""
        out, _ = net(lq, gt, cond=cond)
        return out, None

    def compute_losses(self, output: torch.Tensor, gt: torch.Tensor, priors: Optional[PriorPair] = None,
                       weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Sum of the configured image losses (in fp32) and the per-loss values for the log; ``weight`` (the
        region weights, B x 1 x H x W) goes to the losses that take per-pixel weights."""
        output = output.float()
        total = 0
        loss_dict = OrderedDict()
        for key, loss_fn in self.losses.items():
            if weight is not None and key in self.weighted_losses:
                value = loss_fn(output, gt, weight=weight)
            else:
                value = loss_fn(output, gt)
            if isinstance(value, tuple):  # perceptual loss: (perceptual, style)
                for suffix, v in zip(("percep", "style"), value):
                    if v is not None:
                        total = total + v
                        loss_dict[f"l_{suffix}"] = v
            else:
                total = total + value
                loss_dict["l_pix" if key == "pixel_opt" else f"l_{key[:-4]}"] = value
        return total, loss_dict

    def optimize_parameters(self, current_iter: int) -> None:
        """One step on the fed micro-batches; the input stands in for the output of a skipped step."""
        outputs = self.train_step(self.optimizer_g, self._restoration_losses)
        self.output = self.lq if outputs is None else outputs[0]

    def _restoration_losses(self, micro: MicroBatch, last: bool) -> ChunkLosses:
        """Forward and losses of one micro-batch; DDP all-reduces the gradients after the ``last`` one."""
        lq, gt, cond = micro
        with self.no_sync(self.net_g, last), self.autocast():
            out, priors = self._forward(self.train_forward, lq, gt, cond)
        weight = None if self.region_weights is None else self.region_weights(lq, cond)
        total, loss_dict = self.compute_losses(out, gt, priors, weight)
        return out.detach(), total, loss_dict

    def train_step(self, optimizer: torch.optim.Optimizer, losses: Callable[[MicroBatch, bool], ChunkLosses],
                   before_step: Optional[Callable[[], None]] = None) -> Optional[List[Optional[torch.Tensor]]]:
        """One optimizer step: the gradients of ``losses`` summed over the fed micro-batches (each weighted
        ``1/len``), ``before_step``, the step, the log of the averaged losses and the EMA update.

        ``losses(micro, last)`` returns (detached output or None, loss to back-propagate, losses to log). A
        non-finite loss skips the whole step (:meth:`BaseModel.backward` counts it, names the first of that
        micro-batch's terms that went non-finite, and stops a diverging run): the gradients are dropped and the log
        shows that micro-batch's losses. Returns the micro-batches' outputs,
        None for a skipped step.
        """
        chunks = self.micro
        optimizer.zero_grad(set_to_none=True)
        outputs: List[Optional[torch.Tensor]] = []
        logged: Dict[str, torch.Tensor] = OrderedDict()
        for i, micro in enumerate(chunks):
            out, total, loss_dict = losses(micro, i == len(chunks) - 1)
            if not self.backward(total, 1.0 / len(chunks), loss_dict):
                optimizer.zero_grad(set_to_none=True)
                self.log_dict = self.reduce_loss_dict(loss_dict)
                return None
            outputs.append(out)
            for k, v in loss_dict.items():
                logged[k] = logged.get(k, 0) + v.detach() / len(chunks)
        if before_step is not None:
            before_step()
        self.step(optimizer)
        self.log_dict = self.reduce_loss_dict(logged)
        if self.ema_decay > 0:
            self.model_ema(self.ema_decay)
        return outputs

    @torch.no_grad()
    def test(self) -> None:
        """Inference on the fed images: whole-image, or tiled with ``val.tile_size`` / ``val.tile_overlap``.

        Images are padded to ``val.window_size`` (8) and cropped back. When tiling, the prior (IPR) is still
        extracted once from the whole image, as whole-image inference does; only the DIRformer runs per tile.
        With ``val.self_ensemble`` (4 or 8) the whole (tiled) pass runs on each flip of LQ and GT together (the GT
        is the prior's input) and the outputs are averaged.
        """
        if self.gt is None:
            raise MissingInputError("DiffIR stage 1 builds its prior from the HDR ground truth, so every test image "
                                    "needs a GT. For LDR-only inference use a stage-2 model.")
        window, tile, overlap = self.tiling()
        with self.inference_network() as net:
            def restore(lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
                if tile and hasattr(net, "extract_ipr") and hasattr(net, "restore_with_prior"):
                    ipr = net.extract_ipr(pad_to_multiple(lq, window), pad_to_multiple(gt, window), self.cond)
                    return tiled_forward(lambda x: net.restore_with_prior(x, ipr, self.cond), lq, tile=tile,
                                         overlap=overlap, multiple=window)
                return tiled_forward(lambda x, y: net(x, y, cond=self.cond), lq, gt, tile=tile, overlap=overlap,
                                     multiple=window)

            self.output = self_ensemble(restore, self.lq, self.gt, n=self.self_ensemble_size())

    @contextlib.contextmanager
    def inference_network(self) -> Iterator[nn.Module]:
        """The network to test with (the EMA copy when there is one) in eval mode, eager; its mode is restored."""
        net = self.net_g_ema if self.net_g_ema is not None else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        try:
            with self.eager_inference():
                yield net
        finally:
            net.train(was_training)

    def tiling(self) -> Tuple[int, Optional[int], int]:
        """``val``'s window_size (default 8), tile_size (None: the whole image) and tile_overlap (default 32)."""
        tiling = self.options.val.tiling
        return tiling.window_size, tiling.tile_size, tiling.tile_overlap

    def self_ensemble_size(self) -> int:
        """``val.self_ensemble``: 0 (one plain pass, the default), 4 or 8 transformed passes averaged."""
        return self.options.val.self_ensemble

    def get_current_visuals(self) -> Dict[str, torch.Tensor]:
        out = OrderedDict(lq=self.lq.detach().cpu(), result=self.output.detach().cpu())
        if self.gt is not None:
            out["gt"] = self.gt.detach().cpu()
        return out
