"""The training loop shared by every pipeline. A pipeline only supplies its batch schedule.

:func:`train` is :func:`set_up_run` (options, checks, model, data, experiment folder, resume), :func:`run_loop`
(epochs of :func:`_train_step` / :func:`_after_step`) and :func:`finish_run` (latest checkpoint, final
validation); the three share one :class:`TrainingRun`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import os.path as osp
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple


from DiffIR.config.context import PathOptions, RunPaths
from DiffIR.config.sections import RunOptions
from DiffIR.run_setup import Resume, create_dataloaders, find_resume_state, warn_archived_states
from DiffIR.config.table import frozen
from DiffIR.data import EnlargedSampler, loader_options
from DiffIR.data.prefetcher import build_prefetcher
from DiffIR.models import build_model
from DiffIR.models.checkpointing import check_resumed_options
from DiffIR.models.evaluation import ValidationResult, preview_domains, preview_row
from DiffIR.models.memory import (inference_oom_message, memory_short_warning, out_of_memory_stops,
                                  training_oom_message)
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.utils.checkpoint import list_training_states
from DiffIR.utils.dist import any_rank, barrier, get_dist_info, init_dist
from DiffIR.utils.img_util import make_preview_grid, tensor2img
from DiffIR.utils.log_sinks import SinkGroup, TensorBoardSink
from DiffIR.utils.wandb_sink import open_wandb_sink, wandb_for_run
from DiffIR.utils.logger import MessageLogger, Messages, begin_run_log, dict2str, get_env_info, get_root_logger
from DiffIR.utils.misc import format_duration, mkdir_and_rename, remove_stale_temp_files, set_random_seed
from DiffIR.config.loading import dump_options, parse_options
from DiffIR.utils.errors import DataError, DiskFullError, Preempted, PreemptionFlag, worker_error_message
from DiffIR.utils.runlock import hold_run_lock, holds_run_locks

ScheduleFactory = Callable[[Dict[str, Any]], Any]


def step_batches(loader, n: int):
    """Yield the loader's batches in lists of ``n`` (``train.accum_iter``): the micro-batches of one optimizer step,
    handed to the model as they are. An incomplete last group is dropped, as an incomplete batch is."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == n:
            yield group
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


def _lock_experiment(options: RunOptions, logger) -> None:
    """Rank 0 holds ``experiments/NAME.lock`` for the run's life (a second run with the name refuses, exit 2)
    before anything in the folder is read, archived or written; the other ranks wait at the barrier."""
    if get_dist_info()[0] == 0:
        hold_run_lock(options.context.paths.experiments_root, "experiment", logger.warning)


def _checkpoint_note(path: RunPaths, current_iter: int) -> str:
    """Where the newest complete checkpoint is (for the disk-full message), with its size as a guide."""
    for it, state_path in list_training_states(path.training_states):
        if it == current_iter:
            continue
        net_path = osp.join(path.models, f"net_g_{it}.pth")
        size = sum(osp.getsize(p) for p in (state_path, net_path) if osp.isfile(p)) / 2**20
        return (f" A checkpoint needs about {size:.0f} MB (the previous one); the previous checkpoint {state_path} "
                f"(with {net_path}) is intact: after making room as said, continue with --auto_resume.")
    return " No checkpoint of this run was saved yet."


def _save_checkpoint(model, path: RunPaths, epoch: int, current_iter: int,
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
        text = msg("interrupted", iter=it, path=osp.join(run.path.training_states, f"{it}.state"))
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
    state_path = osp.join(run.path.training_states, f"{run.current_iter}.state")
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
    def from_options(cls, options: RunOptions, batch_size: int) -> "LoopSettings":
        """``batch_size``: the training set's ``batch_size_per_gpu``."""
        train, log, val = options.train, options.logger, options.val
        accum = train.speed.accum_iter
        return cls(total_iters=train.total_iter, accum=accum, sampler_batch=batch_size * accum,
                   warmup_iter=train.warmup_iter, print_freq=log.print_freq, save_freq=log.save_checkpoint_freq,
                   image_freq=log.image_freq, val_freq=val.val_freq or 0, save_img=val.save_img)


@dataclass
class TrainingRun:
    """One training run: what :func:`set_up_run` builds, :func:`run_loop` advances and :func:`finish_run` closes."""

    opt: Dict[str, Any]
    options: RunOptions
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
    def path(self) -> RunPaths:
        return self.options.context.paths


def _parse_and_seed(root_path: str, argv: Optional[List[str]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The checked options and what the user wrote, with the process group started (``--launcher``) and the seed
    of this rank set."""
    opt, args = parse_options(root_path, is_train=True, argv=argv)
    opt["dist"] = opt["launcher"] != "none"
    if opt["dist"]:
        init_dist(opt["launcher"], **(opt.get("dist_params") or {}))
    rank, world = get_dist_info()
    opt["rank"], opt["world_size"] = rank, world
    if opt.get("manual_seed") is None:
        opt["manual_seed"] = random.randint(1, 10000)
    set_random_seed(opt["manual_seed"] + rank)
    return opt, args.user_options


def _model_options(opt: Dict[str, Any], options: RunOptions, resume: Optional[Resume]
                   ) -> Tuple[Dict[str, Any], RunOptions]:
    """The options the model is built from: a resumed run's weights come from its own checkpoint, so the weights
    the run started from (``path:pretrain_network_g``) are not read again."""
    if resume is None:
        return opt, options
    path = {**opt["path"], "pretrain_network_g": None}
    return {**opt, "path": path}, dataclasses.replace(options, path=PathOptions(frozen(path)))


def _prepare_experiment_folder(opt: Dict[str, Any], options: RunOptions, user: Dict[str, Any],
                               resume: Optional[Resume], logger) -> logging.Logger:
    """Rank 0 archives an earlier folder of the name (new runs only) and clears unfinished writes; then every rank
    logs to the run's log file, which starts with the environment and the options; ``options_NAME.yml`` beside it
    holds what the user wrote (``user``)."""
    paths, rank = options.context.paths, options.context.rank
    if rank == 0:
        if resume is None and not options.path.resume_state:
            mkdir_and_rename(paths.experiments_root)
        for folder in (paths.models, paths.training_states, paths.visualization):
            os.makedirs(folder, exist_ok=True)
            for stale in remove_stale_temp_files(folder):
                logger.warning(f"Removed {stale}: the unfinished write of a run that was killed mid-save")
    barrier()  # other ranks use the experiment folder only once rank 0 has set it up
    log_file = osp.join(paths.log, f"train_{options.name}_{time.strftime('%Y%m%d_%H%M%S')}.log")
    logger = get_root_logger(log_file=log_file)
    logger.info(get_env_info())
    logger.info("\n" + dict2str(opt))
    if rank == 0:
        dump_options(user, osp.join(paths.experiments_root, f"options_{options.name}.yml"))
    return logger


def set_up_run(root_path: str, make_schedule: ScheduleFactory, argv: Optional[List[str]],
               default_language: str) -> TrainingRun:
    """Options, lock, resume state, schedule, model, data, experiment folder, log file and loggers, in this order.

    Everything that can be wrong with the options, data or checkpoints is found before the experiment folder is
    touched: a typo must not archive or half-create an experiment. Option values were checked by parse_options;
    the components (network, losses, optimizer, scheduler, metrics) are checked by building the model, before the
    data (checking a large data set takes minutes; building the model draws no data).
    """
    opt, user = _parse_and_seed(root_path, argv)
    options = RunOptions.build(opt)
    wandb = wandb_for_run(options)  # a missing package stops the run here, before anything is touched
    msg = Messages(options.logger.language or default_language)
    logger = begin_run_log()  # records are kept until the log file exists
    _lock_experiment(options, logger)
    resume = find_resume_state(options, logger)
    if resume is not None:
        check_resumed_options(resume.state, opt, resume.state_path, resume.net_path, logger)
    if resume is None and options.context.auto_resume:
        warn_archived_states(options.context.paths.experiments_root, logger)
    schedule = make_schedule(opt)
    model = build_model(*_model_options(opt, options, resume))
    if resume is not None:
        model.resume_networks(resume.net_path)
    logger.info(msg("device", device=model.device))
    if model.device.type == "cpu" and keep_freed_memory():
        logger.info(msg("cpu_malloc"))
    train_loader, sampler, val_loaders = create_dataloaders(opt, options, msg, logger)
    logger.info(schedule.summary(msg))
    batches = build_prefetcher(train_loader, loader_options(opt["datasets"]["train"]), model.device)
    logger = _prepare_experiment_folder(opt, options, user, resume, logger)
    settings = LoopSettings.from_options(options, int(opt["datasets"]["train"]["batch_size_per_gpu"]))
    run = TrainingRun(opt, options, settings, msg, logger, model, schedule, train_loader, sampler, batches,
                      val_loaders)
    _resume(run, resume)
    _open_loggers(run, root_path, user, wandb)
    return run


def _resume(run: TrainingRun, resume: Optional[Resume]) -> None:
    """Optimizers, schedulers, RNG and counters from the training state (the networks were loaded with the model)."""
    if resume is None:
        if run.options.context.auto_resume:
            run.logger.info(f"--auto_resume: no training state in {run.path.training_states}; starting from "
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


def _open_loggers(run: TrainingRun, root_path: str, user: Dict[str, Any], wandb: Any) -> None:
    """The sinks (rank 0: TensorBoard unless turned off or a debug run; wandb when ``wandb`` is its module, with
    ``user``, the options as written, as its config) and the per-iteration message logger."""
    name = run.options.name
    if run.options.context.rank == 0:
        if run.options.logger.use_tb_logger and "debug" not in name:
            run.sinks.sinks.append(TensorBoardSink(osp.join(root_path, "tb_logger", name)))
        sink = wandb and open_wandb_sink(wandb, run.options, user, run.resume_iter > 0, run.logger)
        if sink:
            run.sinks.sinks.append(sink)
    run.msg_logger = MessageLogger(name, run.settings.total_iters, run.current_iter + 1, run.sinks)


def run_loop(run: TrainingRun) -> None:
    """Epochs until ``train.total_iter``; a signal saves a state and ends the run with :class:`Preempted`."""
    run.logger.info(run.msg("start_training", epoch=run.epoch, iter=run.current_iter + 1))
    warning = memory_short_warning(device=run.model.device, **_step_setting(run))
    if warning:
        run.logger.warning(warning)
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
    groups = step_batches(run.batches, run.settings.accum)
    for group in _batches_or_stop(run, groups, preempted):
        _train_step(run, group, data_start)
        _after_step(run, preempted)
        if run.current_iter >= run.settings.total_iters:
            return False
        data_start = time.time()
    return True


def _train_step(run: TrainingRun, group: List[Dict[str, Any]], data_start: float) -> None:
    """One optimizer step on the micro-batches ``group`` (each shaped by the schedule); logs every
    ``logger.print_freq`` iterations."""
    data_time = time.time() - data_start
    run.current_iter += 1
    run.iter_in_epoch += 1
    model = run.model
    model.update_learning_rate(run.current_iter, warmup_iter=run.settings.warmup_iter)
    with out_of_memory_stops(lambda: _step_oom_text(run)):
        model.feed_data([run.schedule(batch, run.current_iter) for batch in group])
        model.optimize_parameters(run.current_iter)
    if run.current_iter % run.settings.print_freq == 0:
        log_vars = {"epoch": run.epoch, "iter": run.current_iter, "lrs": model.get_current_learning_rate(),
                    "time": time.time() - data_start, "data_time": data_time}
        log_vars.update(model.get_current_log())
        run.msg_logger(log_vars)


def _step_setting(run: TrainingRun) -> Dict[str, Any]:
    """The network, batch x patch, amp and checkpointing of the current iteration (for the memory messages)."""
    batch, patch = run.schedule.sizes_at(max(1, run.current_iter))
    speed = run.options.train.speed
    return {"net": run.options.networks.get("network_g", {}), "batch": batch, "patch": patch, "amp": speed.amp,
            "grad_checkpoint": speed.grad_checkpoint}


def _step_oom_text(run: TrainingRun) -> str:
    return training_oom_message(device=run.model.device, iteration=run.current_iter, **_step_setting(run))


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
    name = loader.dataset.opt.get("name", "val")
    with out_of_memory_stops(lambda: inference_oom_message(run.model.device, f"the validation of {name}",
                                                           run.options.val.tiling.tile_size)):
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
    if run.options.val.metrics:
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
    state = osp.join(run.path.training_states, f"{run.current_iter}.state")
    run.logger.warning(run.msg("nothing_to_train", path=state, iter=run.current_iter, total=run.settings.total_iters,
                               more=run.current_iter + max(run.settings.total_iters, 1)))
    if not osp.isfile(osp.join(run.path.models, "net_g_latest.pth")):
        run.logger.info(run.msg("save_latest"))
        _save_checkpoint(run.model, run.path, run.epoch, -1)
    return {"results": {}, "baseline": {}, "iter": run.current_iter}
