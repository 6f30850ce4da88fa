"""The training loop shared by every pipeline. A pipeline only supplies its batch schedule."""
from __future__ import annotations

import glob
import math
import os
import os.path as osp
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from DiffIR.data import EnlargedSampler, build_dataloader, build_dataset
from DiffIR.data.prefetcher import build_prefetcher
from DiffIR.models import build_model
from DiffIR.models.evaluation import preview_domains, preview_row
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.utils.checkpoint import list_training_states, load_file
from DiffIR.utils.dist import any_rank, barrier, get_dist_info, init_dist
from DiffIR.utils.img_util import make_preview_grid
from DiffIR.utils.logger import (MessageLogger, Messages, begin_run_log, dict2str, get_env_info, get_root_logger,
                                 init_tb_logger)
from DiffIR.utils.misc import format_duration, mkdir_and_rename, remove_stale_temp_files, set_random_seed
from DiffIR.utils.options import dump_options, parse_options
from DiffIR.utils.errors import DataError, DiskFullError, OptionError, Preempted, PreemptionFlag, worker_error_message
from DiffIR.utils.runlock import hold_run_lock, holds_run_locks

ScheduleFactory = Callable[[Dict[str, Any]], Any]


def find_resume_state(opt: Dict[str, Any], logger) -> Optional[Tuple[Dict[str, Any], str]]:
    """The training state to resume from (``path.resume_state`` or, with ``--auto_resume``, the newest one).

    With auto-resume an unreadable newest state is skipped with a warning and the one before it is used.
    The network weights come from ``models/net_g_ITER.pth`` of the same iteration.
    """
    path_opt = opt["path"]
    explicit = path_opt.get("resume_state")
    candidates: List[Tuple[int, str]] = []
    if explicit:
        candidates = [(-1, explicit)]
    elif opt.get("auto_resume"):
        candidates = list_training_states(path_opt["training_states"])
    for _, state_path in candidates:
        try:
            state = load_file(state_path, "training state")
            net_path = osp.join(osp.dirname(osp.dirname(osp.abspath(state_path))), "models", f"net_g_{state['iter']}.pth")
            if not osp.isfile(net_path):
                raise FileNotFoundError(f"its network checkpoint {net_path} is missing")
        except (RuntimeError, FileNotFoundError, KeyError) as e:
            if explicit:
                raise
            logger.warning(f"Skipping training state {state_path}: {e}")
            continue
        return state, net_path
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


def create_dataloaders(opt: Dict[str, Any], msg: Messages, logger):
    rank, world = get_dist_info()
    datasets = opt.get("datasets") or {}
    if "train" not in datasets:
        raise OptionError("datasets needs a 'train' entry")
    train_opt = datasets["train"]
    train_set = build_dataset(train_opt)
    ratio = int(train_opt.get("dataset_enlarge_ratio", 1) or 1)
    sampler = EnlargedSampler(train_set, world, rank, ratio, seed=opt.get("manual_seed"))
    train_loader = build_dataloader(train_set, train_opt, opt["num_gpu"], opt.get("dist", False), sampler,
                                    opt.get("manual_seed"))
    batch = int(train_opt["batch_size_per_gpu"])
    accum = int(opt["train"].get("accum_iter", 1) or 1)
    iters_per_epoch = max(1, len(train_loader) // accum)  # optimizer steps per epoch (full batches only)
    if len(train_set) * ratio // world < batch:
        raise OptionError(f"The training set has {len(train_set)} pairs (×{ratio} enlarge ratio over {world} "
                          f"process(es)), fewer than datasets:train:batch_size_per_gpu={batch}: no full batch can be "
                          "formed. Add data, raise dataset_enlarge_ratio or lower the batch size.")
    total_iters = int(opt["train"]["total_iter"])
    total_epochs = math.ceil(total_iters / iters_per_epoch)
    logger.info(f"{msg('train_stats')}"
                f"\n\t{msg('num_train_images')}: {len(train_set)}"
                f"\n\t{msg('enlarge_ratio')}: {ratio}"
                f"\n\t{msg('batch_per_gpu')}: {batch}"
                f"\n\t{msg('world_size')}: {world}"
                f"\n\t{msg('iters_per_epoch')}: {iters_per_epoch}"
                f"\n\t{msg('total_epochs_iters', epochs=total_epochs, iters=total_iters)}")
    val_loaders = []
    for phase, dopt in datasets.items():
        if phase == "train":
            continue
        val_set = build_dataset(dopt)
        val_loaders.append(build_dataloader(val_set, dopt, opt["num_gpu"], opt.get("dist", False), None,
                                            opt.get("manual_seed")))
        logger.info(msg("num_val_images", name=dopt.get("name", phase), n=len(val_set)))
    return train_loader, sampler, val_loaders, total_epochs, total_iters


def accumulate_batches(loader, n: int):
    """Yield groups of ``n`` loader batches joined into one (``train.accum_iter``; the model splits them again)."""
    if n == 1:
        yield from loader
        return
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == n:
            yield {k: torch.cat([b[k] for b in group]) if isinstance(group[0][k], torch.Tensor)
                   else [x for b in group for x in b[k]] for k in group[0]}
            group = []


def _log_preview(tb_logger, model, current_iter: int, dataset) -> None:
    """Training samples as input | output | GT | error map, displayed as validation previews are (preview_row)."""
    vis = model.get_current_visuals()
    if "gt" not in vis:
        return
    domain, input_domain = preview_domains(dataset)
    rows = [preview_row(vis["lq"][i], vis["result"][i], vis["gt"][i], domain=domain, input_domain=input_domain)
            for i in range(min(4, vis["lq"].shape[0]))]
    tb_logger.add_image("train/input_output_gt", make_preview_grid(rows), current_iter)


def _lock_experiment(opt: Dict[str, Any], logger) -> None:
    """Rank 0 holds ``experiments/NAME.lock`` for the run's life (a second run with the name refuses, exit 2)
    before anything in the folder is read, archived or written; the other ranks wait at the barrier."""
    if get_dist_info()[0] == 0:
        hold_run_lock(opt["path"]["experiments_root"], "experiment", logger.warning)


def _checkpoint_note(path: Dict[str, Any], current_iter: int) -> str:
    """Where the newest complete checkpoint is (for the disk-full message), with its size as a guide."""
    for it, state_path in list_training_states(path["training_states"]):
        if it == current_iter:
            continue
        net_path = osp.join(path["models"], f"net_g_{it}.pth")
        size = sum(osp.getsize(p) for p in (state_path, net_path) if osp.isfile(p)) / 2**20
        return (f" A checkpoint needs about {size:.0f} MB (the previous one); the previous checkpoint {state_path} "
                f"(with {net_path}) is intact: after freeing space, continue with --auto_resume.")
    return " No checkpoint of this run was saved yet."


def _save_checkpoint(model, path: Dict[str, Any], epoch: int, current_iter: int,
                     extra: Optional[Dict[str, Any]] = None) -> None:
    """``model.save``; a full disk ends the run with one message naming the file and the intact checkpoint."""
    try:
        model.save(epoch, current_iter, extra)
    except DiskFullError as e:
        raise DiskFullError(str(e) + _checkpoint_note(path, current_iter)) from None


def _stop_requested(preempted: PreemptionFlag) -> bool:
    """The signal flag, agreed over ranks (a signal may reach the ranks in different iterations)."""
    return any_rank(preempted.is_set())


def _preempted(preempted: PreemptionFlag, msg: Messages, path: Dict[str, Any], current_iter: int) -> Preempted:
    if preempted.exit_code == 130:
        text = msg("interrupted", iter=current_iter, path=osp.join(path["training_states"], f"{current_iter}.state"))
    else:
        text = msg("preempted", iter=current_iter)
    return Preempted(text, preempted.exit_code)


def _batches_or_data_error(batches, save_state: Callable[[], str]):
    """Yield ``batches``; a bad data file met while loading saves a state first, then ends with its message.

    Such a file slipped past the up-front dataset check (e.g. replaced since the cached check). Under DataLoader
    workers torch wraps the dataset's error in "Caught ... in DataLoader worker"; the message is unwrapped.
    """
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (OSError, ValueError) as e:
            text = worker_error_message(e)
            raise DataError(f"{text}\n{save_state()} Fix or replace the file (python check_dataset.py -opt ... "
                            "lists every problem), then continue with --auto_resume.") from None
        yield batch


def _save_before_data_error(model, path: Dict[str, Any], epoch: int, current_iter: int, iter_in_epoch: int) -> str:
    """Save the state of the last completed iteration (unless saved already); says what was kept."""
    state_path = osp.join(path["training_states"], f"{current_iter}.state")
    if current_iter == 0:
        return "No iteration was completed, so there is nothing to save."
    if not osp.isfile(state_path):
        if get_dist_info()[1] > 1:  # the save is collective: the other ranks cannot join it from here
            return f"Training stopped at iteration {current_iter}; the newest saved checkpoint is kept."
        _save_checkpoint(model, path, epoch, current_iter, {"iter_in_epoch": iter_in_epoch})
    return f"The training state of iteration {current_iter} is saved ({state_path})."


@holds_run_locks
def train(root_path: str, make_schedule: ScheduleFactory, argv: Optional[List[str]] = None,
          default_language: str = "zh") -> Dict[str, Any]:
    """Parse options, build data/model, run the loop. Returns the last validation results per val set."""
    opt, _ = parse_options(root_path, is_train=True, argv=argv)
    if opt["launcher"] != "none":
        init_dist(opt["launcher"], **(opt.get("dist_params") or {}))
        opt["dist"] = True
    else:
        opt["dist"] = False
    rank, world = get_dist_info()
    opt["rank"], opt["world_size"] = rank, world
    seed = opt.get("manual_seed")
    if seed is None:
        seed = random.randint(1, 10000)
        opt["manual_seed"] = seed
    set_random_seed(seed + rank)
    logger_opt = opt.get("logger") or {}
    msg = Messages(logger_opt.get("language", default_language))

    path = opt["path"]
    logger = begin_run_log()  # records are kept until the log file exists
    _lock_experiment(opt, logger)
    # Everything that can be wrong with the options, data or checkpoints is found before the experiment
    # folder is touched: a typo must not archive or half-create an experiment. Option values were checked by
    # parse_options; the components (network, losses, optimizer, scheduler, metrics) are checked by building the
    # model, before the data (checking a large data set takes minutes; building the model draws no data).
    resume = find_resume_state(opt, logger)
    if resume is not None:
        state, net_path = resume
        path["pretrain_network_g"], path["param_key_g"], path["strict_load_g"] = net_path, "params", True
    elif opt.get("auto_resume"):
        warn_archived_states(path["experiments_root"], logger)
    schedule = make_schedule(opt)
    model = build_model(opt)
    logger.info(msg("device", device=model.device))
    if model.device.type == "cpu" and keep_freed_memory():
        logger.info(msg("cpu_malloc"))
    train_loader, sampler, val_loaders, total_epochs, total_iters = create_dataloaders(opt, msg, logger)
    logger.info(schedule.summary(msg))
    accum = int(opt["train"].get("accum_iter", 1) or 1)
    sampler_batch = int(opt["datasets"]["train"]["batch_size_per_gpu"]) * accum
    prefetcher = build_prefetcher(train_loader, opt["datasets"]["train"], model.device)

    if rank == 0:
        if resume is None and not path.get("resume_state"):
            mkdir_and_rename(path["experiments_root"])
        for key in ("models", "training_states", "visualization"):
            os.makedirs(path[key], exist_ok=True)
            for stale in remove_stale_temp_files(path[key]):
                logger.warning(f"Removed {stale}: the unfinished write of a run that was killed mid-save")
    barrier()  # other ranks use the experiment folder only once rank 0 has set it up
    log_file = osp.join(path["log"], f"train_{opt['name']}_{time.strftime('%Y%m%d_%H%M%S')}.log")
    logger = get_root_logger(log_file=log_file)
    logger.info(get_env_info())
    logger.info("\n" + dict2str(opt))
    if rank == 0:
        dump_options(opt, osp.join(path["experiments_root"], f"options_{opt['name']}.yml"))

    start_epoch, current_iter, resume_skip = 0, 0, 0
    if opt.get("auto_resume") and resume is None:
        logger.info(f"--auto_resume: no training state in {path['training_states']}; starting from scratch.")
    if resume is not None:
        model.resume_training(state)
        start_epoch, current_iter = int(state["epoch"]), int(state["iter"])
        resume_skip = int(state.get("iter_in_epoch", 0))
        if resume_skip >= len(train_loader) // accum:
            start_epoch, resume_skip = start_epoch + 1, 0
        logger.info(msg("resuming", path=net_path.replace("models/net_g_", "training_states/").replace(".pth", ".state"),
                        iter=current_iter, epoch=start_epoch))

    resume_iter = current_iter
    if ((logger_opt.get("wandb") or {}).get("project")):
        logger.warning("logger.wandb is not supported by this program and is ignored; use TensorBoard (tb_logger/).")
    tb_logger = None
    if logger_opt.get("use_tb_logger", True) and rank == 0 and "debug" not in opt["name"]:
        tb_logger = init_tb_logger(osp.join(root_path, "tb_logger", opt["name"]))
    msg_logger = MessageLogger(opt, current_iter + 1, tb_logger)
    print_freq = int(logger_opt.get("print_freq", 100))
    save_freq = int(float(logger_opt.get("save_checkpoint_freq", 5000)))
    image_freq = int(float(logger_opt.get("tb_image_freq", save_freq)))
    val_opt = opt.get("val") or {}
    val_freq = int(float(val_opt.get("val_freq", 0) or 0))
    warmup_iter = int(opt["train"].get("warmup_iter", -1) or -1)

    logger.info(msg("start_training", epoch=start_epoch, iter=current_iter + 1))
    start_time = time.time()
    results: Dict[str, Any] = {}
    epoch, skip = start_epoch, resume_skip
    with PreemptionFlag(msg("interrupt_notice")) as preempted:
        while current_iter < total_iters:
            sampler.set_epoch(epoch, start=skip * sampler_batch)
            iter_in_epoch = skip
            skip = 0
            data_start = iter_start = time.time()
            for batch in _batches_or_data_error(accumulate_batches(prefetcher, accum), lambda: _save_before_data_error(
                    model, path, epoch, current_iter, iter_in_epoch)):
                data_time = time.time() - data_start
                current_iter += 1
                iter_in_epoch += 1
                model.update_learning_rate(current_iter, warmup_iter=warmup_iter)
                model.feed_data(schedule(batch, current_iter))
                model.optimize_parameters(current_iter)
                iter_time = time.time() - iter_start
                if current_iter % print_freq == 0:
                    log_vars = {"epoch": epoch, "iter": current_iter, "lrs": model.get_current_learning_rate(),
                                "time": iter_time, "data_time": data_time}
                    log_vars.update(model.get_current_log())
                    msg_logger(log_vars)
                if tb_logger is not None and current_iter % image_freq == 0:
                    _log_preview(tb_logger, model, current_iter, train_loader.dataset)
                stop = _stop_requested(preempted)
                if current_iter % save_freq == 0 or stop:
                    logger.info(msg("saving", iter=current_iter))
                    _save_checkpoint(model, path, epoch, current_iter, {"iter_in_epoch": iter_in_epoch})
                if stop:
                    raise _preempted(preempted, msg, path, current_iter)
                if val_freq and val_loaders and current_iter % val_freq == 0:
                    for loader in val_loaders:
                        results[loader.dataset.opt.get("name")] = model.validation(
                            loader, current_iter, tb_logger, val_opt.get("save_img", False))
                data_start = iter_start = time.time()
                if current_iter >= total_iters:
                    break
            else:
                epoch += 1

    logger.info(msg("end_training", time=format_duration(time.time() - start_time)))
    logger.info(msg("save_latest"))
    _save_checkpoint(model, path, epoch, -1)
    validated_now = bool(val_freq) and current_iter % val_freq == 0 and resume_iter != current_iter
    for loader in val_loaders:
        name = loader.dataset.opt.get("name")
        if val_opt.get("metrics"):
            if not validated_now or name not in results:
                results[name] = model.validation(loader, current_iter, tb_logger, val_opt.get("save_img", False))
            base = model.baseline_results(name)
            for metric, value in (results[name] or {}).items():
                if metric in base:
                    logger.info(msg("final_compare", name=name, metric=metric, model=value, base=base[metric],
                                    gain=value - base[metric]))
    if tb_logger is not None:
        tb_logger.close()
    return {"results": results, "baseline": {l.dataset.opt.get("name"): model.baseline_results(l.dataset.opt.get("name"))
                                             for l in val_loaders}, "iter": current_iter}
