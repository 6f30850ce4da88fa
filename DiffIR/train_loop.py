"""The training loop shared by every pipeline. A pipeline only supplies its batch schedule.

:func:`train` is :func:`set_up_run` (options, checks, model, data, experiment folder, resume), :func:`run_loop`
(epochs of :func:`_train_step` / :func:`_after_step`) and :func:`finish_run` (latest checkpoint, final
validation); the three share one :class:`TrainingRun`.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import os.path as osp
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from DiffIR.data import EnlargedSampler, build_dataloader, build_dataset
from DiffIR.data.prefetcher import build_prefetcher
from DiffIR.models import build_model
from DiffIR.models.checkpointing import check_resumed_options
from DiffIR.models.evaluation import ValidationResult, check_crop_borders, preview_domains, preview_row
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.utils.checkpoint import list_training_states, load_file
from DiffIR.utils.dist import any_rank, barrier, get_dist_info, init_dist
from DiffIR.utils.img_util import make_preview_grid, tensor2img
from DiffIR.utils.log_sinks import SinkGroup, TensorBoardSink
from DiffIR.utils.logger import MessageLogger, Messages, begin_run_log, dict2str, get_env_info, get_root_logger
from DiffIR.utils.misc import format_duration, mkdir_and_rename, remove_stale_temp_files, set_random_seed
from DiffIR.utils.options import dump_options, parse_options
from DiffIR.utils.errors import DataError, DiskFullError, OptionError, Preempted, PreemptionFlag, worker_error_message
from DiffIR.utils.runlock import hold_run_lock, holds_run_locks

ScheduleFactory = Callable[[Dict[str, Any]], Any]


@dataclass
class Resume:
    """Where a resumed run continues: the training state read from ``state_path`` and its network file."""

    state: Dict[str, Any]
    state_path: str
    net_path: str


def find_resume_state(opt: Dict[str, Any], logger) -> Optional[Resume]:
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


def create_dataloaders(opt: Dict[str, Any], msg: Messages, logger) -> Tuple[Any, EnlargedSampler, List[Any]]:
    """The training loader and its sampler, and the validation loaders; logs the data summary.

    The options were checked by ``parse_options`` and the loader's own settings are checked by ``build_dataloader``.
    """
    rank, world = get_dist_info()
    train_opt = opt["datasets"]["train"]
    train_set = build_dataset(train_opt)
    ratio = int(train_opt.get("dataset_enlarge_ratio", 1) or 1)
    sampler = EnlargedSampler(train_set, world, rank, ratio, seed=opt.get("manual_seed"))
    train_loader = build_dataloader(train_set, train_opt, opt["num_gpu"], opt.get("dist", False), sampler,
                                    opt.get("manual_seed"))
    accum = int(opt["train"].get("accum_iter", 1) or 1)
    iters_per_epoch = max(1, len(train_loader) // accum)  # optimizer steps per epoch (full batches only)
    total_iters = int(opt["train"]["total_iter"])
    total_epochs = math.ceil(total_iters / iters_per_epoch)
    logger.info(f"{msg('train_stats')}"
                f"\n\t{msg('num_train_images')}: {len(train_set)}"
                f"\n\t{msg('enlarge_ratio')}: {ratio}"
                f"\n\t{msg('batch_per_gpu')}: {int(train_opt['batch_size_per_gpu'])}"
                f"\n\t{msg('world_size')}: {world}"
                f"\n\t{msg('iters_per_epoch')}: {iters_per_epoch}"
                f"\n\t{msg('total_epochs_iters', epochs=total_epochs, iters=total_iters)}")
    val_loaders = []
    for phase, dopt in opt["datasets"].items():
        if phase == "train":
            continue
        val_set = build_dataset(dopt)
        check_crop_borders(opt.get("val"), val_set)
        val_loaders.append(build_dataloader(val_set, dopt, opt["num_gpu"], opt.get("dist", False), None,
                                            opt.get("manual_seed")))
        logger.info(msg("num_val_images", name=dopt.get("name", phase), n=len(val_set)))
    return train_loader, sampler, val_loaders


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


def _log_preview(sinks: SinkGroup, model, current_iter: int, dataset) -> None:
    """Training samples as input | output | GT | error map, displayed as validation previews are (preview_row)."""
    vis = model.get_current_visuals()
    if "gt" not in vis:
        return
    domain, input_domain = preview_domains(dataset)
    rows = [preview_row(vis["lq"][i], vis["result"][i], vis["gt"][i], domain=domain, input_domain=input_domain)
            for i in range(min(4, vis["lq"].shape[0]))]
    sinks.image("train/input_output_gt", tensor2img(make_preview_grid(rows)), current_iter)


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
                f"(with {net_path}) is intact: after making room as said, continue with --auto_resume.")
    return " No checkpoint of this run was saved yet."


def _save_checkpoint(model, path: Dict[str, Any], epoch: int, current_iter: int,
                     extra: Optional[Dict[str, Any]] = None) -> None:
    """``model.save``; a full disk (or quota, or file size limit) ends the run with one message naming the file, the
    limit and the intact checkpoint."""
    try:
        model.save(epoch, current_iter, extra)
    except DiskFullError as e:
        raise DiskFullError(str(e) + _checkpoint_note(path, current_iter)) from None


def _stop_requested(preempted: PreemptionFlag) -> bool:
    """The signal flag, agreed over ranks (a signal may reach the ranks in different iterations)."""
    return any_rank(preempted.is_set())


def _preempted(run: "TrainingRun", preempted: PreemptionFlag) -> Preempted:
    """The stop a signal asked for, once the state of ``run.current_iter`` is saved; noted in the log when the
    DataLoader workers ended by the same signal (sent to the whole process group)."""
    msg, it = run.msg, run.current_iter
    if preempted.children_ended and getattr(run.train_loader, "num_workers", 0) > 0:
        run.logger.warning(msg("workers_stopped", iter=it))
    if preempted.exit_code == 130:
        text = msg("interrupted", iter=it, path=osp.join(run.path["training_states"], f"{it}.state"))
    else:
        text = msg("preempted", iter=it, signal=preempted.signal_name)
    return Preempted(text, preempted.exit_code)


_WORKER_DIED = re.compile(r"DataLoader worker \(pids?(?:\(s\))? [\d, ]+\) (?:is killed by signal|exited unexpectedly)")


def _worker_gone(exc: BaseException) -> bool:
    """Whether the loader failed because a DataLoader worker is dead: torch's "worker ... exited unexpectedly" /
    "is killed by signal", or a batch whose shared tensors the dead worker can no longer hand over (the
    connection to it is reset or closed)."""
    if isinstance(exc, (ConnectionError, EOFError)):
        return True
    return isinstance(exc, RuntimeError) and bool(_WORKER_DIED.search(str(exc)))


def _batches_or_stop(run: "TrainingRun", batches, preempted: PreemptionFlag):
    """Yield ``batches``; a bad data file met while loading saves a state first, then ends with its message.

    Such a file slipped past the up-front dataset check (e.g. replaced since the cached check). Under DataLoader
    workers torch wraps the dataset's error in "Caught ... in DataLoader worker"; the message is unwrapped.
    A worker that died while a stop signal is pending (the signal reached the whole process group) ends the run
    as that signal does: the last completed iteration is saved.
    """
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (OSError, ValueError, RuntimeError, EOFError) as e:
            if preempted.is_set() and _worker_gone(e):
                preempted.children_ended = True
                _save_last_iteration(run)
                raise _preempted(run, preempted) from None
            if isinstance(e, (RuntimeError, EOFError)):
                raise
            text = worker_error_message(e)
            raise DataError(f"{text}\n{_save_last_iteration(run)} Fix or replace the file (python "
                            "check_dataset.py -opt ... lists every problem), then continue with --auto_resume."
                            ) from None
        yield batch


def _save_last_iteration(run: "TrainingRun") -> str:
    """Save the state of the last completed iteration (unless saved already); says what was kept."""
    state_path = osp.join(run.path["training_states"], f"{run.current_iter}.state")
    if run.current_iter == 0:
        return "No iteration was completed, so there is nothing to save."
    if not osp.isfile(state_path):
        if get_dist_info()[1] > 1:  # the save is collective: the other ranks cannot join it from here
            return f"Training stopped at iteration {run.current_iter}; the newest saved checkpoint is kept."
        _save_checkpoint(run.model, run.path, run.epoch, run.current_iter, {"iter_in_epoch": run.iter_in_epoch})
    return f"The training state of iteration {run.current_iter} is saved ({state_path})."


@dataclass(frozen=True)
class LoopSettings:
    """The loop's numbers, read once from the (checked) options."""

    total_iters: int
    accum: int  # loader batches per optimizer step (train.accum_iter)
    sampler_batch: int  # samples one optimizer step draws from the sampler
    warmup_iter: int
    print_freq: int
    save_freq: int
    image_freq: int  # training previews in TensorBoard
    val_freq: int  # 0: validate only at the end
    save_img: bool

    @classmethod
    def from_options(cls, opt: Dict[str, Any]) -> "LoopSettings":
        train, logger_opt, val = opt["train"], opt.get("logger") or {}, opt.get("val") or {}
        accum = int(train.get("accum_iter", 1) or 1)
        save_freq = int(float(logger_opt.get("save_checkpoint_freq", 5000)))
        return cls(total_iters=int(train["total_iter"]), accum=accum,
                   sampler_batch=int(opt["datasets"]["train"]["batch_size_per_gpu"]) * accum,
                   warmup_iter=int(train.get("warmup_iter", -1) or -1),
                   print_freq=int(logger_opt.get("print_freq", 100)), save_freq=save_freq,
                   image_freq=int(float(logger_opt.get("tb_image_freq", save_freq))),
                   val_freq=int(float(val.get("val_freq", 0) or 0)), save_img=bool(val.get("save_img", False)))


@dataclass
class TrainingRun:
    """One training run: what :func:`set_up_run` builds, :func:`run_loop` advances and :func:`finish_run` closes."""

    opt: Dict[str, Any]
    settings: LoopSettings
    msg: Messages
    logger: logging.Logger
    model: Any
    schedule: Any
    train_loader: Any
    sampler: EnlargedSampler
    batches: Any  # the prefetcher over train_loader
    val_loaders: List[Any]
    sinks: SinkGroup = field(default_factory=SinkGroup)  # rank 0's trackers; empty elsewhere
    msg_logger: Optional[MessageLogger] = None
    epoch: int = 0
    current_iter: int = 0
    resume_iter: int = 0  # the iteration the run started after (0, or that of the training state)
    skip: int = 0  # optimizer steps of the current epoch done before the resume
    iter_in_epoch: int = 0
    results: Dict[str, Any] = field(default_factory=dict)
    start_time: float = 0.0

    @property
    def path(self) -> Dict[str, Any]:
        return self.opt["path"]


def _parse_and_seed(root_path: str, argv: Optional[List[str]]) -> Dict[str, Any]:
    """The checked options, with the process group started (``--launcher``) and the seed of this rank set."""
    opt, _ = parse_options(root_path, is_train=True, argv=argv)
    opt["dist"] = opt["launcher"] != "none"
    if opt["dist"]:
        init_dist(opt["launcher"], **(opt.get("dist_params") or {}))
    rank, world = get_dist_info()
    opt["rank"], opt["world_size"] = rank, world
    if opt.get("manual_seed") is None:
        opt["manual_seed"] = random.randint(1, 10000)
    set_random_seed(opt["manual_seed"] + rank)
    return opt


def _model_options(opt: Dict[str, Any], resume: Optional[Resume]) -> Dict[str, Any]:
    """The options the model is built from: a resumed run's weights come from its own checkpoint, so the weights
    the run started from (``path:pretrain_network_g``) are not read again."""
    if resume is None:
        return opt
    return {**opt, "path": {**opt["path"], "pretrain_network_g": None}}


def _prepare_experiment_folder(opt: Dict[str, Any], resume: Optional[Resume], logger) -> logging.Logger:
    """Rank 0 archives an earlier folder of the name (new runs only) and clears unfinished writes; then every rank
    logs to the run's log file, which starts with the environment and the options (also dumped beside it)."""
    path = opt["path"]
    if get_dist_info()[0] == 0:
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
    if get_dist_info()[0] == 0:
        dump_options(opt, osp.join(path["experiments_root"], f"options_{opt['name']}.yml"))
    return logger


def set_up_run(root_path: str, make_schedule: ScheduleFactory, argv: Optional[List[str]],
               default_language: str) -> TrainingRun:
    """Options, lock, resume state, schedule, model, data, experiment folder, log file and loggers, in this order.

    Everything that can be wrong with the options, data or checkpoints is found before the experiment folder is
    touched: a typo must not archive or half-create an experiment. Option values were checked by parse_options;
    the components (network, losses, optimizer, scheduler, metrics) are checked by building the model, before the
    data (checking a large data set takes minutes; building the model draws no data).
    """
    opt = _parse_and_seed(root_path, argv)
    msg = Messages((opt.get("logger") or {}).get("language", default_language))
    logger = begin_run_log()  # records are kept until the log file exists
    _lock_experiment(opt, logger)
    resume = find_resume_state(opt, logger)
    if resume is not None:
        check_resumed_options(resume.state, opt, resume.state_path, resume.net_path, logger)
    if resume is None and opt.get("auto_resume"):
        warn_archived_states(opt["path"]["experiments_root"], logger)
    schedule = make_schedule(opt)
    model = build_model(_model_options(opt, resume))
    if resume is not None:
        model.resume_networks(resume.net_path)
    logger.info(msg("device", device=model.device))
    if model.device.type == "cpu" and keep_freed_memory():
        logger.info(msg("cpu_malloc"))
    train_loader, sampler, val_loaders = create_dataloaders(opt, msg, logger)
    logger.info(schedule.summary(msg))
    batches = build_prefetcher(train_loader, opt["datasets"]["train"], model.device)
    logger = _prepare_experiment_folder(opt, resume, logger)
    run = TrainingRun(opt, LoopSettings.from_options(opt), msg, logger, model, schedule, train_loader, sampler,
                      batches, val_loaders)
    _resume(run, resume)
    _open_loggers(run, root_path)
    return run


def _resume(run: TrainingRun, resume: Optional[Resume]) -> None:
    """Optimizers, schedulers, RNG and counters from the training state (the networks were loaded with the model)."""
    if resume is None:
        if run.opt.get("auto_resume"):
            run.logger.info(f"--auto_resume: no training state in {run.path['training_states']}; starting from "
                            "scratch.")
        return
    state = resume.state
    run.model.resume_training(state)
    run.epoch, run.current_iter = int(state["epoch"]), int(state["iter"])
    run.skip = int(state.get("iter_in_epoch", 0))
    if run.skip >= len(run.train_loader) // run.settings.accum:
        run.epoch, run.skip = run.epoch + 1, 0
    run.resume_iter = run.current_iter
    run.logger.info(run.msg("resuming", path=resume.state_path, iter=run.current_iter, epoch=run.epoch))


def _open_loggers(run: TrainingRun, root_path: str) -> None:
    """The sinks (rank 0; TensorBoard unless turned off or a debug run) and the per-iteration message logger."""
    logger_opt = run.opt.get("logger") or {}
    if (logger_opt.get("wandb") or {}).get("project"):
        run.logger.warning("logger.wandb is not supported by this program and is ignored; use TensorBoard "
                           "(tb_logger/).")
    if logger_opt.get("use_tb_logger", True) and run.opt["rank"] == 0 and "debug" not in run.opt["name"]:
        run.sinks.sinks.append(TensorBoardSink(osp.join(root_path, "tb_logger", run.opt["name"])))
    run.msg_logger = MessageLogger(run.opt["name"], run.settings.total_iters, run.current_iter + 1, run.sinks)


def run_loop(run: TrainingRun) -> None:
    """Epochs until ``train.total_iter``; a signal saves a state and ends the run with :class:`Preempted`."""
    run.logger.info(run.msg("start_training", epoch=run.epoch, iter=run.current_iter + 1))
    run.start_time = time.time()
    with PreemptionFlag(run.msg("interrupt_notice")) as preempted:
        while run.current_iter < run.settings.total_iters:
            if _run_epoch(run, preempted):
                run.epoch += 1


def _run_epoch(run: TrainingRun, preempted: PreemptionFlag) -> bool:
    """The (rest of the) current epoch; False when training ended inside it."""
    run.sampler.set_epoch(run.epoch, start=run.skip * run.settings.sampler_batch)
    run.iter_in_epoch, run.skip = run.skip, 0
    data_start = time.time()
    batches = accumulate_batches(run.batches, run.settings.accum)
    for batch in _batches_or_stop(run, batches, preempted):
        _train_step(run, batch, data_start)
        _after_step(run, preempted)
        if run.current_iter >= run.settings.total_iters:
            return False
        data_start = time.time()
    return True


def _train_step(run: TrainingRun, batch: Dict[str, Any], data_start: float) -> None:
    """One optimizer step on ``batch`` (shaped by the schedule); logs every ``logger.print_freq`` iterations."""
    data_time = time.time() - data_start
    run.current_iter += 1
    run.iter_in_epoch += 1
    model = run.model
    model.update_learning_rate(run.current_iter, warmup_iter=run.settings.warmup_iter)
    model.feed_data(run.schedule(batch, run.current_iter))
    model.optimize_parameters(run.current_iter)
    if run.current_iter % run.settings.print_freq == 0:
        log_vars = {"epoch": run.epoch, "iter": run.current_iter, "lrs": model.get_current_learning_rate(),
                    "time": time.time() - data_start, "data_time": data_time}
        log_vars.update(model.get_current_log())
        run.msg_logger(log_vars)


def _after_step(run: TrainingRun, preempted: PreemptionFlag) -> None:
    """Preview, checkpoint (also when a signal asked to stop, then stop) and validation, as their frequencies say."""
    it, settings = run.current_iter, run.settings
    if run.sinks and it % settings.image_freq == 0:
        _log_preview(run.sinks, run.model, it, run.train_loader.dataset)
    stop = _stop_requested(preempted)
    if it % settings.save_freq == 0 or stop:
        run.logger.info(run.msg("saving", iter=it))
        _save_checkpoint(run.model, run.path, run.epoch, it, {"iter_in_epoch": run.iter_in_epoch})
    if stop:
        raise _preempted(run, preempted)
    if settings.val_freq and run.val_loaders and it % settings.val_freq == 0:
        for loader in run.val_loaders:
            _validate(run, loader)


def _validate(run: TrainingRun, loader) -> None:
    """Score one val set; the first one also decides ``models/net_g_best.pth`` (``val.save_best``)."""
    result = run.model.validation(loader, run.current_iter, run.settings.save_img)
    _record_validation(run.sinks, result, run.current_iter)
    run.results[loader.dataset.opt.get("name")] = result.metrics
    if loader is run.val_loaders[0]:
        run.model.update_best_checkpoint(loader.dataset.opt.get("name", "val"), result.metrics, run.current_iter)


def _record_validation(sinks: SinkGroup, result: ValidationResult, step: int) -> None:
    """``val/<set>/input_output_gt_error`` (the grid on disk), ``metrics/<set>/<name>`` and, once per set, the
    input's ``metrics/<set>/<name>_input``."""
    if result.preview is not None:
        sinks.image(f"val/{result.dataset}/input_output_gt_error", result.preview.image, step)
    figures = {f"metrics/{result.dataset}/{name}_input": v for name, v in result.baseline.items()}
    figures.update({f"metrics/{result.dataset}/{name}": v for name, v in result.metrics.items()})
    sinks.scalars(figures, step)


def finish_run(run: TrainingRun) -> Dict[str, Any]:
    """Save ``net_g_latest.pth``, validate once more (unless the last iteration did) and compare with the input.

    Returns the last validation results and the baseline (the input's scores) per validation set.
    """
    run.logger.info(run.msg("end_training", time=format_duration(time.time() - run.start_time)))
    run.logger.info(run.msg("save_latest"))
    _save_checkpoint(run.model, run.path, run.epoch, -1)
    if (run.opt.get("val") or {}).get("metrics"):
        val_freq = run.settings.val_freq
        validated_now = bool(val_freq) and run.current_iter % val_freq == 0 and run.resume_iter != run.current_iter
        for loader in run.val_loaders:
            name = loader.dataset.opt.get("name")
            if not validated_now or name not in run.results:
                _validate(run, loader)
            _log_final_comparison(run, name)
    names = [loader.dataset.opt.get("name") for loader in run.val_loaders]
    return {"results": run.results, "baseline": {name: run.model.baseline_results(name) for name in names},
            "iter": run.current_iter}


def _log_final_comparison(run: TrainingRun, name: str) -> None:
    """Each metric of the trained model beside the same metric of the network's input (the baseline)."""
    base = run.model.baseline_results(name)
    for metric, value in (run.results[name] or {}).items():
        if metric in base:
            run.logger.info(run.msg("final_compare", name=name, metric=metric, model=value, base=base[metric],
                                    gain=value - base[metric]))


@holds_run_locks
def train(root_path: str, make_schedule: ScheduleFactory, argv: Optional[List[str]] = None,
          default_language: str = "zh") -> Dict[str, Any]:
    """Set up, run and finish one training run. Returns the last validation results per val set."""
    run = set_up_run(root_path, make_schedule, argv, default_language)
    try:
        if run.current_iter >= run.settings.total_iters:
            return _nothing_to_train(run)
        run_loop(run)
        return finish_run(run)
    finally:
        run.sinks.close()  # also when the run stops early: what the sinks hold is flushed


def _nothing_to_train(run: TrainingRun) -> Dict[str, Any]:
    """A resumed state already at (or past) ``train.total_iter``: say so and how to train longer, instead of
    "start training" and an empty loop; ``net_g_latest.pth`` is written only if missing (a run stopped by a signal
    after its last iteration)."""
    state = osp.join(run.path["training_states"], f"{run.current_iter}.state")
    run.logger.warning(run.msg("nothing_to_train", path=state, iter=run.current_iter, total=run.settings.total_iters,
                               more=run.current_iter + max(run.settings.total_iters, 1)))
    if not osp.isfile(osp.join(run.path["models"], "net_g_latest.pth")):
        run.logger.info(run.msg("save_latest"))
        _save_checkpoint(run.model, run.path, run.epoch, -1)
    return {"results": {}, "baseline": {}, "iter": run.current_iter}
