"""What a training run is set up from before its first step: the training state it resumes from and its data.

Kept apart from the loop (:mod:`DiffIR.train_loop`), which only advances a run once these are found.
"""
from __future__ import annotations

import glob
import math
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from DiffIR.config.sections import RunOptions
from DiffIR.data import EnlargedSampler, build_dataloader, build_dataset, loader_options
from DiffIR.models.evaluation import check_crop_borders
from DiffIR.utils.checkpoint import list_training_states, load_file
from DiffIR.utils.dist import get_dist_info
from DiffIR.utils.logger import Messages

__all__ = ["Resume", "find_resume_state", "warn_archived_states", "create_dataloaders"]


@dataclass
class Resume:
    """Where a resumed run continues: the training state read from ``state_path`` and its network file."""

    state: Dict[str, Any]
    state_path: str
    net_path: str


def find_resume_state(options: RunOptions, logger) -> Optional[Resume]:
    """The training state to resume from (``path.resume_state`` or, with ``--auto_resume``, the newest one).

    With auto-resume an unreadable newest state is skipped with a warning and the one before it is used.
    The network weights come from ``models/net_g_ITER.pth`` of the same iteration.
    """
    explicit = options.path.resume_state
    candidates: List[Tuple[int, str]] = []
    if explicit:
        candidates = [(-1, explicit)]
    elif options.context.auto_resume:
        candidates = list_training_states(options.context.paths.training_states)
    for _, state_path in candidates:
        try:
            state = load_file(state_path, "training state")
            experiment = osp.dirname(osp.dirname(osp.abspath(state_path)))
            net_path = osp.join(experiment, "models", f"net_g_{state['iter']}.pth")
            if not osp.isfile(net_path):
                raise FileNotFoundError(f"its network checkpoint {net_path} is missing")
        except (RuntimeError, FileNotFoundError, KeyError) as e:
            if explicit:
                raise
            logger.warning(f"Skipping training state {state_path}: {e}")
            continue
        return Resume(state, osp.abspath(state_path), net_path)
    return None


def warn_archived_states(experiments_root: str, logger) -> List[str]:
    """``--auto_resume`` found no state: name the archived runs beside it that hold some, and how to resume one.

    ``experiments/NAME_archived_<time>/`` is where a new run moved an earlier folder of the same name; a run
    restarted there from iteration 1 would otherwise go unnoticed. Returns the newest state of each archive.
    """
    newest = []
    for folder in sorted(glob.glob(glob.escape(experiments_root) + "_archived_*")):
        states = list_training_states(osp.join(folder, "training_states"))
        if states:
            newest.append(states[0][1])
    if newest:
        logger.warning(
            f"--auto_resume: no training state in {osp.join(experiments_root, 'training_states')}, but archived runs "
            f"of this name hold some: {', '.join(newest)}. This run starts from iteration 1. To continue one of them "
            f"instead, stop and rerun with --force_yml path:resume_state={newest[-1]} (or set path:resume_state).")
    return newest


def create_dataloaders(opt: Dict[str, Any], options: RunOptions, msg: Messages, logger
                       ) -> Tuple[Any, EnlargedSampler, List[Any]]:
    """The training loader and its sampler, and the validation loaders; logs the data summary.

    The options were checked by ``parse_options`` and the loader's own settings are checked by ``build_dataloader``.
    """
    rank, world = get_dist_info()
    context, seed = options.context, options.context.seed
    train_opt = opt["datasets"]["train"]
    train_set = build_dataset(train_opt)
    loader = loader_options(train_opt)
    ratio = loader.dataset_enlarge_ratio
    sampler = EnlargedSampler(train_set, world, rank, ratio, seed=seed)
    train_loader = build_dataloader(train_set, loader, context.num_gpu, context.dist, sampler, seed)
    accum = options.train.speed.accum_iter
    iters_per_epoch = max(1, len(train_loader) // accum)  # optimizer steps per epoch (full batches only)
    total_iters = options.train.total_iter
    total_epochs = math.ceil(total_iters / iters_per_epoch)
    logger.info(f"{msg('train_stats')}"
                f"\n\t{msg('num_train_images')}: {len(train_set)}"
                f"\n\t{msg('enlarge_ratio')}: {ratio}"
                f"\n\t{msg('batch_per_gpu')}: {loader.batch_size_per_gpu}"
                f"\n\t{msg('world_size')}: {world}"
                f"\n\t{msg('iters_per_epoch')}: {iters_per_epoch}"
                f"\n\t{msg('total_epochs_iters', epochs=total_epochs, iters=total_iters)}")
    val_loaders = []
    for phase, dopt in opt["datasets"].items():
        if phase == "train":
            continue
        val_set = build_dataset(dopt)
        check_crop_borders(options.val.metrics, val_set)
        val_loader = loader_options(dopt)
        val_loaders.append(build_dataloader(val_set, val_loader, context.num_gpu, context.dist, None, seed))
        logger.info(msg("num_val_images", name=val_loader.name or phase, n=len(val_set)))
    return train_loader, sampler, val_loaders
