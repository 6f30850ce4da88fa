"""DiffIR stage 2: distil the stage-1 prior into a diffusion model that needs only the LDR, then fine-tune jointly.

The training recipe is the official ``DiffIRS2Model``'s:

* a frozen stage-1 teacher (``network_S1`` loaded from ``path.pretrain_network_S1``) extracts the target IPR
  from (LQ, GT) for every batch;
* phase A (``iter < train.encoder_iter``): only the prior branch (CPEN_S2 + denoiser [+ ``cond_embed``]) runs
  and learns, with the L1 part of ``kd_opt`` (KDLoss) between its final IPR and the teacher's; learning rate
  ``lr_encoder · gamma_encoder^(iter // lr_decay_encoder)``;
* phase B: the whole network trains on ``pixel_opt`` (+ other image losses) + the KD L1;
  learning rate ``lr_sr · gamma_sr^((iter - encoder_iter) // lr_decay_sr)``.

Deliberate differences from the official code (each keeps its results and file formats):

* runs on one process too (the official phase A reaches the network through ``net_g.module`` and crashes without
  DDP), and under DDP phase A averages the prior's gradients over ranks (the official code calls the bare module,
  so its ranks drift apart);
* without ``path.pretrain_network_g`` the student's shared parts (``G.*``, and ``cond_embed.*``) are copied from
  the teacher, i.e. the official configuration (both paths naming the stage-1 file) without repeating the path;
* the EMA copy starts as an exact copy of ``net_g`` (as in stage 1), not as a second random draw of the new
  branches that the 0.999 average then has to forget;
* validation/test draw the diffusion's start noise from a generator seeded with ``manual_seed`` for every image,
  so scores are reproducible and validation does not shift the training random stream;
* the teacher's checkpoint key is ``path.param_key_S1`` (default ``params_ema``), not ``param_key_g``, so that a
  resumed run (which reads ``params`` of its own checkpoint) still loads the teacher's EMA weights.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from DiffIR.archs import build_network
from DiffIR.config.context import NetworkWeights
from DiffIR.config.sections import RunOptions, Stage2Recipe
from DiffIR.losses import build_loss
from DiffIR.losses.kd_loss import KDLoss
from DiffIR.models.diffir_s1_model import ChunkLosses, DiffIRS1Model, MicroBatch, PriorPair
from DiffIR.models.self_ensemble import self_ensemble
from DiffIR.models.tiling import tiled_forward
from DiffIR.utils.checkpoint import CheckpointMismatch, extract_state_dict
from DiffIR.utils.dist import get_dist_info, reduce_mean
from DiffIR.utils.img_util import pad_to_multiple
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import MODEL_REGISTRY

__all__ = ["DiffIRS2Model", "RECIPE_KEYS", "STAGE1_WEIGHTS_MESSAGE", "is_stage1_state", "restore_ldr_only",
           "seeded_rng"]

STAGE1_WEIGHTS_MESSAGE = (
    "{what} is a DiffIR stage-1 (DiffIRS1) model. Stage 1 builds its prior from the HDR ground truth, so it cannot "
    "restore an LDR image on its own. Train stage 2 from it (python train_hdr.py -opt options/train_DiffIRs2_hdr.yml "
    "with path:pretrain_network_S1 set to this stage-1 checkpoint; the demo: options/demo_DiffIRs2_hdr.yml) and "
    "use the stage-2 net_g_*.pth instead.")

#: the official two-phase recipe (train section), with the official values for the error message
RECIPE_KEYS: Dict[str, Any] = {"encoder_iter": 100000, "lr_encoder": 2e-4, "lr_sr": 2e-4, "gamma_encoder": 0.1,
                               "gamma_sr": 0.5, "lr_decay_encoder": 60000, "lr_decay_sr": 80000}


def is_stage1_state(state: Dict[str, torch.Tensor]) -> bool:
    """True for a stage-1 state_dict (prior extractor ``E.*`` that sees the GT, no diffusion)."""
    return any(k.startswith("E.") for k in state) and not any(k.startswith("diffusion.") for k in state)


@contextlib.contextmanager
def seeded_rng(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run the block with the torch RNG seeded to ``seed`` and restore the previous state afterwards.

    Stage 2's prior starts from Gaussian noise, so seeding makes its outputs reproducible; ``None`` leaves the
    RNG alone (the official behaviour).
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


@torch.no_grad()
def restore_ldr_only(net: nn.Module, lq: torch.Tensor, cond: Optional[torch.Tensor] = None, *, window: int = 8,
                     tile: Optional[int] = None, overlap: int = 32, seed: Optional[int] = 0,
                     ensemble: int = 0) -> torch.Tensor:
    """Stage-2 inference on a (B, 3, H, W) network-domain batch: the prior from the whole image, then the DIRformer.

    The image is reflect-padded to ``window`` and cropped back. With ``tile`` the DIRformer runs on overlapping
    tiles (:func:`tiled_forward`) under the one whole-image prior, so tiles agree with each other and with
    whole-image inference. ``ensemble`` (4 or 8) averages that whole pass over flips (and transposes) of
    the image; every pass starts its prior from the same noise (the RNG is seeded afresh for each; with
    ``seed=None`` one seed is drawn from the torch RNG for all of them). ``net`` must be in eval mode.
    """
    if seed is None and ensemble:
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,)).item())

    def restore(x: torch.Tensor) -> torch.Tensor:
        with seeded_rng(seed, x.device):
            ipr = net(pad_to_multiple(x, window), cond=cond, prior_only=True)
        return tiled_forward(lambda t: net.restore_with_prior(t, ipr, cond), x, tile=tile, overlap=overlap,
                             multiple=window)

    return self_ensemble(restore, lq, n=ensemble)


@MODEL_REGISTRY.register()
class DiffIRS2Model(DiffIRS1Model):
    """Stage-2 model: LDR-only inference; training distils the prior of a frozen stage-1 teacher."""

    #: the prior is generated from the LDR alone; test sets may lack GT
    needs_gt_for_inference = False

    def __init__(self, opt: Dict[str, Any], options: Optional[RunOptions] = None) -> None:
        # Several networks may load from one file: the official configuration names the stage-1 checkpoint as both
        # path:pretrain_network_g (student and its EMA copy) and path:pretrain_network_S1 (teacher). Each file is read
        # once while the model is built (read_network_file) and let go afterwards.
        self._files: Optional[Dict[str, Any]] = {}
        self._active_optimizer: Optional[torch.optim.Optimizer] = None  # the optimizer of the current phase
        self.output: Optional[torch.Tensor] = None
        options = options if options is not None else RunOptions.build(opt)
        try:
            if not options.context.is_train:
                self._refuse_stage1_weights(options.path.weights("g"))
            super().__init__(opt, options)
        finally:
            self._files = None

    def _refuse_stage1_weights(self, weights: NetworkWeights) -> None:
        """Testing with stage-1 weights would run with a random prior: refuse them before loading."""
        if weights.path:
            state = extract_state_dict(self.read_network_file(weights.path), weights.param_key, weights.path)
            if is_stage1_state(state):
                raise OptionError(STAGE1_WEIGHTS_MESSAGE.format(what=f"path:pretrain_network_g '{weights.path}'"))

    def read_network_file(self, path: str) -> Any:
        """The checkpoint at ``path``, read from disk once while the model is built."""
        if self._files is None:
            return super().read_network_file(path)
        if path not in self._files:
            self._files[path] = super().read_network_file(path)
        return self._files[path]

    # ----------------------------------------------------------------------------------------- setup
    def init_training_settings(self) -> None:
        """Teacher and student initialisation first (the EMA copies the student), then the stage-1 settings,
        then the stage-2 additions: the KD loss and the prior branch's optimizer."""
        self.recipe = self._read_recipe(self.options.train.stage2)
        self.net_g_S1 = self._build_teacher()
        if not self._pretrain_path:
            self._init_student_from_teacher()
        super().init_training_settings()
        self._active_optimizer = self.optimizer_g

    def image_loss_options(self) -> Dict[str, Any]:
        """Every ``*_opt`` but ``kd_opt``, which becomes :attr:`cri_kd` (the distillation loss on the prior)."""
        sections = super().image_loss_options()
        kd_opt = sections.pop("kd_opt", None)
        if kd_opt is None:
            raise OptionError("DiffIRS2Model needs 'train:kd_opt' (the distillation loss on the prior), e.g. "
                              "kd_opt: {type: KDLoss, loss_weight: 1, temperature: 0.15}")
        kd = build_loss(dict(kd_opt), "train:kd_opt").to(self.device)
        if not isinstance(kd, KDLoss):
            raise OptionError(f"'train:kd_opt:type' must be KDLoss (it returns the KL and L1 terms), got "
                              f"{type(kd).__name__}")
        if not sections:
            raise OptionError("DiffIRS2Model needs an image loss besides kd_opt for its second phase, e.g. "
                              "pixel_opt: {type: L1Loss, loss_weight: 1.0}")
        self.cri_kd = kd
        return sections

    def setup_optimizers(self) -> None:
        """``optimizer_g`` (every parameter, the joint phase), then ``optimizer_e`` (the prior branch, the first
        phase): the official order of the optimizers in a training state."""
        super().setup_optimizers()
        bare = self.get_bare_model(self.net_g)
        self._prior_params = [p for n, p in bare.named_parameters() if not n.startswith("G.") and p.requires_grad]
        self.optimizer_e = self.build_optimizer(self.options.train.optim_g, self._prior_params)
        self.optimizers.append(self.optimizer_e)

    def setup_schedulers(self) -> None:
        """No scheduler runs: the two-phase recipe sets the learning rate every iteration, as the official
        DiffIRS2Model does (which attaches the scheduler to both optimizers and then overwrites it). Its options
        are still checked."""
        if self.check_schedule() or self.options.train.warmup_iter > 0:
            self.logger.info("train:scheduler / warmup_iter have no effect in stage 2: the two-phase recipe "
                             "(lr_encoder/lr_sr, gamma_*, lr_decay_*) sets the learning rate every iteration, as in "
                             "the official DiffIRS2Model.")

    @staticmethod
    def _read_recipe(stage2: Stage2Recipe) -> Dict[str, Any]:
        """The recipe's values (their types and ranges are rows of the option table); all of them are required."""
        recipe = {k: getattr(stage2, k) for k in RECIPE_KEYS}
        missing = [k for k, v in recipe.items() if v is None]
        if missing:
            example = ", ".join(f"{k}: {RECIPE_KEYS[k]}" for k in missing)
            raise OptionError(f"DiffIRS2Model needs the two-phase recipe in 'train': missing {', '.join(missing)} "
                              f"(official values: {example}).")
        return recipe

    def _build_teacher(self) -> nn.Module:
        """The frozen stage-1 network whose CPEN gives the target IPR (never optimised, never wrapped in DDP)."""
        if not self.opt.get("network_S1"):
            raise OptionError("DiffIRS2Model training needs 'network_S1': the stage-1 network (type DiffIRS1 with the "
                              "network_g options of the stage-1 training) whose prior is distilled")
        weights = self.options.path.weights("S1", "params_ema")
        path = weights.path
        if not path:
            raise OptionError("DiffIRS2Model training needs 'path:pretrain_network_S1': the trained stage-1 "
                              "checkpoint, e.g. experiments/train_DiffIRS1_hdr/models/net_g_latest.pth")
        teacher = build_network(self.opt["network_S1"], "network_S1")
        if not hasattr(teacher, "extract_ipr"):
            raise OptionError(f"'network_S1:type' must be a stage-1 network (DiffIRS1), got {type(teacher).__name__}")
        teacher = teacher.to(self.device)
        try:
            # the teacher gives only its prior, so a highlight gate it was trained with does not matter here
            self.load_network(teacher, path, weights.strict, weights.param_key, check_record=False)
        except CheckpointMismatch as e:  # an unreadable or unsafe file keeps its own message
            hint = ""
            if "diffusion." in str(e) or "condition." in str(e):
                hint = " It looks like a stage-2 checkpoint: pretrain_network_S1 must be the stage-1 (DiffIRS1) file."
            raise OptionError(f"path:pretrain_network_S1 '{path}' does not fit network_S1.{hint} network_S1 must "
                              f"repeat the network_g options the stage-1 model was trained with.\n{e}") from None
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.logger.info(f"Stage-1 teacher loaded from {path} [{weights.param_key}]")
        return teacher

    def _init_student_from_teacher(self) -> None:
        """Copy the tensors the student shares with the teacher (the DIRformer ``G``; ``cond_embed`` when both have
        it); CPEN_S2 and the denoiser keep their random initialisation, as in the official recipe."""
        student = self.get_bare_model(self.net_g)
        own = student.state_dict()
        shared = {k: v for k, v in self.net_g_S1.state_dict().items() if k in own}
        wrong = [k for k, v in shared.items() if v.shape != own[k].shape]
        if wrong:
            raise OptionError("network_g and network_S1 describe different DIRformers (the student starts from the "
                              f"teacher's): shapes differ for {', '.join(wrong[:3])}. Use the same dim, num_blocks, "
                              "heads, ffn_expansion_factor ... in both.")
        student.load_state_dict(shared, strict=False)
        groups = sorted({k.split(".")[0] for k in shared})
        self.logger.info(f"Stage-2 network initialised from the stage-1 teacher: {len(shared)} tensors "
                         f"({', '.join(g + '.*' for g in groups)}); CPEN_S2 and the denoiser start at random.")

    # ----------------------------------------------------------------------------------------- training
    @torch.no_grad()
    def teacher_ipr(self, lq: torch.Tensor, gt: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The distillation target: the stage-1 IPR of (LQ, GT), computed in fp32 even under ``train.amp``."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.net_g_S1.extract_ipr(lq.float(), gt.float(), cond)

    def phase_learning_rate(self, current_iter: int) -> Tuple[str, float]:
        """``('encoder', lr)`` during phase A, ``('sr', lr)`` afterwards (the official step decays)."""
        r = self.recipe
        if current_iter < r["encoder_iter"]:
            return "encoder", r["lr_encoder"] * r["gamma_encoder"] ** (current_iter // r["lr_decay_encoder"])
        return "sr", r["lr_sr"] * r["gamma_sr"] ** ((current_iter - r["encoder_iter"]) // r["lr_decay_sr"])

    def optimize_parameters(self, current_iter: int) -> None:
        phase, lr = self.phase_learning_rate(current_iter)
        self._active_optimizer = self.optimizer_e if phase == "encoder" else self.optimizer_g
        for group in self._active_optimizer.param_groups:
            group["lr"] = lr
        if phase == "encoder":
            self._optimize_prior()
        else:
            super().optimize_parameters(current_iter)  # the stage-1 loop, through _forward/compute_losses below

    def _kd_losses(self, target: torch.Tensor, student: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The KD L1 of the final IPR (the loss) and, for the log, the KL and L1 terms under the official names."""
        kl, l1 = self.cri_kd(target, student.float())
        i = self.get_bare_model(self.net_g).timesteps - 1  # the supervised (last) reverse step
        return l1, OrderedDict([(f"l_kd_{i}", kl), (f"l_abs_{i}", l1)])

    def _optimize_prior(self) -> None:
        """Phase A: only the diffusion branch runs (no DIRformer); loss = KD L1 of the final IPR.

        The bare network is called (its DIRformer gets no gradient, which a DDP wrapper would wait for), so under
        DDP the prior's gradients are averaged before the step.
        """
        self.train_step(self.optimizer_e, self._prior_losses, before_step=self._average_prior_grads)
        self.output = None  # no image is restored in this phase

    def _prior_losses(self, micro: MicroBatch, last: bool) -> ChunkLosses:
        """Phase A's forward and KD losses of one micro-batch (no output image: the DIRformer does not run)."""
        lq, gt, cond = micro
        target = self.teacher_ipr(lq, gt, cond)
        with self.autocast():
            _, estimates = self.get_bare_model(self.net_g)(lq, target, cond=cond, prior_only=True)
        l1, logged = self._kd_losses(target, estimates[-1])
        return None, l1, logged

    def _average_prior_grads(self) -> None:
        """Under DDP, average the prior branch's gradients over ranks (phase A bypasses the DDP wrapper)."""
        if get_dist_info()[1] == 1:
            return
        grads = [p.grad for p in self._prior_params if p.grad is not None]
        if len(grads) != len(self._prior_params):
            raise RuntimeError("phase A: some prior-branch parameters got no gradient, so ranks cannot be averaged")
        flat = reduce_mean(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _forward(self, net: Callable[..., Any], lq: torch.Tensor, gt: torch.Tensor, cond: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, Optional[PriorPair]]:
        """Phase-B training forward for the stage-1 loop: the teacher's IPR takes the place of the GT input.

        Returns the restored batch and the (teacher, student) IPR pair that :meth:`compute_losses` distils.
        """
        target = self.teacher_ipr(lq, gt, cond)
        out, estimates = net(lq, target, cond=cond)
        return out, (target, estimates[-1])

    def compute_losses(self, output: torch.Tensor, gt: torch.Tensor, priors: Optional[PriorPair] = None,
                       weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Image losses (stage 1, region-weighted as there) + the KD L1 of the final IPR; the KL term is logged
        only (official)."""
        if priors is None:
            raise RuntimeError("stage 2's compute_losses needs the (teacher, student) IPR pair that _forward returns")
        total, loss_dict = super().compute_losses(output, gt, weight=weight)
        l1, kd_log = self._kd_losses(*priors)
        loss_dict.update(kd_log)
        return total + l1, loss_dict

    def get_current_learning_rate(self) -> List[float]:
        """The learning rate of the optimizer that stepped last (the prior's in phase A, the whole network's after)."""
        opt = self._active_optimizer or self.optimizers[0]
        return [g["lr"] for g in opt.param_groups]

    # ----------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def test(self) -> None:
        """LDR-only inference (no GT needed): whole-image prior, DIRformer whole or tiled (``val.tile_size``).

        The start noise is seeded with ``manual_seed`` for every image (reproducible scores) and, with
        ``val.self_ensemble``, for every flip of it.
        """
        window, tile, overlap = self.tiling()
        with self.inference_network() as net:
            self.output = restore_ldr_only(net, self.lq, self.cond, window=window, tile=tile, overlap=overlap,
                                           seed=self.options.context.seed or 0,
                                           ensemble=self.self_ensemble_size())

    def get_current_visuals(self) -> Dict[str, torch.Tensor]:
        """As stage 1; during phase A (no restored image) only the input, so no training preview is drawn."""
        if self.output is None:
            return OrderedDict(lq=self.lq.detach().cpu())
        return super().get_current_visuals()
