"""The sections of an option file, one frozen dataclass each; every field is one row of the option table.

Defaults here are the ones the program uses (they are applied, not just documented). Keys whose values are
components (``optim_g``, ``scheduler``, ``val:metrics``, the losses ``*_opt``) stay mappings, built by the registry
and checked against the component's signature; keys with a check that spans several keys (the tiling, the
best-checkpoint metric) keep that check in :mod:`DiffIR.config.schema` and their row says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

from DiffIR.config.context import PathOptions, RunContext
from DiffIR.config.limits import MAX_BATCH, MAX_ENLARGE, MAX_IMAGE_SIDE, MAX_PREFETCH, MAX_WINDOW, MAX_WORKERS
from DiffIR.config.table import Section, Value, frozen, group, option, raise_all
from DiffIR.utils.logger import MESSAGES

__all__ = ["TopOptions", "SpeedOptions", "Stage2Recipe", "TrainOptions", "TilingOptions", "ValOptions",
           "LoggerOptions", "DistOptions", "LoaderOptions", "RunOptions", "SELF_ENSEMBLE_SIZES", "SAVE_FORMATS", "tile_size_error",
           "check_val_options"]

#: ``val:save_format``: the file type of the linear HDR outputs
SAVE_FORMATS = ("hdr", "exr", "npy")
#: ``val:self_ensemble``: how many flipped/transposed passes are averaged at test time (0 = off, one pass)
SELF_ENSEMBLE_SIZES = (0, 4, 8)


@dataclass(frozen=True)
class TopOptions(Section):
    """The top-level values (the sections and the networks are keys of their own)."""

    manual_seed: Optional[int] = option(None, int, lo=0, hi=2 ** 31 - 1, example="manual_seed: 0",
                                        help="seed of this run (+ rank); ~: a random one, logged")
    scale: int = option(1, int, lo=1, example="scale: 1", help="the datasets' scale (1 for HDR and deblur)")
    find_unused_parameters: bool = option(False, bool, help="DDP's flag, for networks with unused branches")
    cudnn_benchmark: Optional[bool] = option(None, bool, help="some BasicSR forks' spelling of train:cudnn_benchmark")


def _every_nth(value: Any, key: str) -> Tuple[Any, Optional[str]]:
    """``false``/``true``/N as the block interval of ``train:grad_checkpoint`` (0: off, 1: every block)."""
    if value is True or value is False:
        return int(value), None
    if isinstance(value, int) and value >= 0:
        return value, None
    return value, (f"'{key}' is {value!r}. Fix: write false, true (every transformer block) or a whole number N "
                   ">= 1 (every N-th block), e.g. grad_checkpoint: true.")


@dataclass(frozen=True)
class SpeedOptions(Section):
    """How fast a step runs; none of these changes what is learnt beyond floating-point rounding."""

    amp: str = option("none", str, choices=("none", "bf16", "fp16"), casefold=True, example="amp: bf16",
                      help="autocast of the forward pass in bf16 or fp16 (with a GradScaler)")
    compile: bool = option(False, bool, help="torch.compile the network")
    channels_last: bool = option(False, bool, help="NHWC memory layout of the network's tensors")
    accum_iter: int = option(1, int, lo=1, example="accum_iter: 1",
                             help="loader batches per optimizer step (gradient accumulation)")
    cudnn_benchmark: Optional[bool] = option(None, bool, exact=True,
                                             help="cuDNN autotuning on CUDA; ~: on (BasicSR's default)")
    grad_checkpoint: int = option(0, convert=_every_nth,
                                  help="false | true | N: recompute every (N-th) transformer block in the backward "
                                       "pass instead of keeping its activations (0: off)")


@dataclass(frozen=True)
class Stage2Recipe(Section):
    """The official stage-2 two-phase recipe: a prior-only phase, then joint training (DiffIRS2Model)."""

    encoder_iter: Optional[int] = option(None, int, lo=0, example="encoder_iter: 100000",
                                         help="iterations of the prior-only phase")
    lr_encoder: Optional[float] = option(None, float, above=0, example="lr_encoder: 2e-4")
    lr_sr: Optional[float] = option(None, float, above=0, example="lr_sr: 2e-4")
    gamma_encoder: Optional[float] = option(None, float, above=0, example="gamma_encoder: 0.1")
    gamma_sr: Optional[float] = option(None, float, above=0, example="gamma_sr: 0.5")
    lr_decay_encoder: Optional[int] = option(None, int, lo=1, example="lr_decay_encoder: 60000")
    lr_decay_sr: Optional[int] = option(None, int, lo=1, example="lr_decay_sr: 80000")


@dataclass(frozen=True)
class TrainOptions(Section):
    """``train``: the iterations, EMA and stability settings, with the speed options and the stage-2 recipe read
    from the same flat keys. The losses are the ``*_opt`` keys (:attr:`losses`)."""

    total_iter: Optional[int] = option(None, int, lo=1, example="total_iter: 300000",
                                       help="optimizer steps of the run (required for training)")
    warmup_iter: int = option(-1, int, lo=-1, example="warmup_iter: -1 (no warm-up) or a number of iterations",
                              help="linear learning-rate warm-up")
    ema_decay: float = option(0.0, float, lo=0, below=1, example="ema_decay: 0.999 (0: no EMA)")
    ema_warmup: bool = option(True, bool, help="ramp the EMA decay up over the first updates")
    grad_clip: Optional[float] = option(None, float, lo=0, example="grad_clip: 0.01 (~: no clipping)")
    max_nonfinite_steps: int = option(10, int, lo=1, example="max_nonfinite_steps: 10",
                                      help="non-finite losses in a row that end the run")
    region_weights: Any = option(None, help="loss weights of clipped/black LDR pixels (schema.REGION_WEIGHTS)")
    optim_g: Mapping[str, Any] = option({}, help="the optimizer: {type: Adam, lr: 2e-4, ...}")
    scheduler: Mapping[str, Any] = option({}, help="the learning-rate schedule: {type: ..., ...}")
    mixing_augs: Mapping[str, Any] = option({}, help="mixup of the training pairs")
    speed: SpeedOptions = group(SpeedOptions)
    stage2: Stage2Recipe = group(Stage2Recipe)
    losses: Mapping[str, Any] = field(default_factory=lambda: frozen({}))  # the *_opt keys, set by :meth:`build`

    @classmethod
    def parse(cls, mapping: Optional[Mapping[str, Any]], where: str = "train:") -> Tuple["TrainOptions", List[str]]:
        section, errors = super().parse(mapping, where)
        losses = {k: v for k, v in (mapping if isinstance(mapping, Mapping) else {}).items()
                  if str(k).endswith("_opt") and k != "optim_g" and v}  # ~ or {}: a loss switched off
        return section.replace(losses=frozen(losses)), errors


def tile_size_error(tile: Any, window: int, key: str, off: str, example: str, window_key: str = "") -> Optional[str]:
    """Why ``tile`` cannot be a tile side, else None: a positive multiple of the network's size multiple ``window``
    up to :data:`MAX_IMAGE_SIDE` (``val:tile_size`` and ``inference_hdr.py --tile`` share this bound). ``off`` is
    the value that turns tiling off, ``window_key`` names where ``window`` comes from."""
    if isinstance(tile, int) and not isinstance(tile, bool) and 0 < tile <= MAX_IMAGE_SIDE and not tile % window:
        return None
    return (f"'{key}' must be a positive multiple of {window}{window_key} up to {MAX_IMAGE_SIDE}, or {off} for "
            f"whole-image inference, got {tile!r}; e.g. {example}")


def _tiling_errors(val: Mapping[str, Any]) -> List[str]:
    """``window_size``, ``tile_size`` and ``tile_overlap`` depend on each other (tiles are network-size multiples
    and must leave a stride)."""
    window = val.get("window_size") or 8
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= MAX_WINDOW:
        return [f"'val:window_size' must be an integer in [1, {MAX_WINDOW}] (the network's size multiple, 8 for "
                f"DiffIR), got {window!r}"]
    tile = val.get("tile_size")
    if tile is None:
        return []
    error = tile_size_error(tile, window, "val:tile_size", "~", "tile_size: 512", " (val:window_size)")
    if error:
        return [error]
    overlap = val.get("tile_overlap", 32)
    if not isinstance(overlap, int) or overlap < 0 or overlap > tile - window:
        return [f"'val:tile_overlap' must be an integer in [0, tile_size - {window}] = [0, {tile - window}], got "
                f"{overlap!r} (default 32); e.g. tile_overlap: {min(32, tile // 4)}"]
    return []


def _save_best_errors(val: Mapping[str, Any]) -> List[str]:
    """``val:save_best`` names the metric (a key of ``val:metrics``) that picks ``models/net_g_best.pth``."""
    best = val.get("save_best")
    if best is None:
        return []
    metrics = val.get("metrics")
    names = list(metrics) if isinstance(metrics, Mapping) else []
    if not names:
        return [f"'val:save_best' is {best!r}, but val:metrics is empty. Fix: add the metric to val:metrics (e.g. "
                "psnr: {type: calculate_psnr}) or remove save_best."]
    if not isinstance(best, str) or best not in names:
        return [f"'val:save_best' is {best!r}; it must name one of val:metrics: {', '.join(map(str, names))} "
                f"(e.g. save_best: {names[0]})."]
    return []


#: ``crop_border`` of every ``val:metrics:<name>`` entry (its other arguments are checked against the metric)
CROP_BORDER = Value(int, lo=0, hi=MAX_IMAGE_SIDE // 2, example="crop_border: 0")


@dataclass(frozen=True)
class TilingOptions(Section):
    """Whole images in tiles (``val``), checked together (:func:`_tiling_errors`)."""

    window_size: int = option(8, help="the network's size multiple (8 for DiffIR)")
    tile_size: Optional[int] = option(None, help="tile side; ~: whole-image inference")
    tile_overlap: int = option(32, help="pixels shared by neighbouring tiles")


@dataclass(frozen=True)
class ValOptions(Section):
    """``val``: how often and how the validation/test sets are scored and saved."""

    val_freq: Optional[int] = option(None, int, lo=1, example="val_freq: 5000 (~: validate only at the end)")
    save_img: bool = option(False, bool, help="write the outputs (linear HDR + PNG preview)")
    pbar: bool = option(True, bool, help="a progress bar per set")
    baseline: bool = option(True, bool, help="also score the network input (the plain inverse tone mapping)")
    save_preview: bool = option(True, bool, help="a tone-mapped PNG beside each saved output")
    num_preview_images: int = option(4, int, lo=0, example="num_preview_images: 4", nullable=False,
                                     help="images of each set in the preview grid")
    metrics: Mapping[str, Any] = option({}, help="name: {type: calculate_..., ...}")
    suffix: Optional[str] = option(None, help="appended to output names; ~: the run name or iteration")
    save_format: str = option("hdr", help="hdr | exr | npy")
    self_ensemble: int = option(0, help="0 | 4 | 8 flipped passes averaged")
    save_best: Optional[str] = option(None, help="the metric that picks models/net_g_best.pth")
    tiling: TilingOptions = group(TilingOptions)

    @staticmethod
    def key_errors(val: Mapping[str, Any]) -> List[str]:
        """The checks that span keys or look inside one: tiling, output format, ensemble size, the best-checkpoint
        metric, the file-name suffix and each metric's ``crop_border``."""
        errors = _tiling_errors(val)
        metrics = val.get("metrics")
        for name, metric in (metrics.items() if isinstance(metrics, Mapping) else ()):
            if isinstance(metric, Mapping) and "crop_border" in metric:
                error = CROP_BORDER.check(metric["crop_border"], f"val:metrics:{name}:crop_border")[1]
                errors += [error] if error else []
        fmt = val.get("save_format", "hdr")
        if fmt not in SAVE_FORMATS:
            errors.append(f"'val:save_format' is {fmt!r}; use one of: {', '.join(SAVE_FORMATS)}")
        ensemble = val.get("self_ensemble")
        if ensemble is not None and (isinstance(ensemble, bool) or ensemble not in SELF_ENSEMBLE_SIZES):
            errors.append(f"'val:self_ensemble' is {ensemble!r}; use 0 (off), 4 (flips) or 8 (flips and transposes), "
                          "e.g. self_ensemble: 8")
        errors += _save_best_errors(val)
        suffix = val.get("suffix")
        if suffix is not None and any(c in str(suffix) for c in ("/", "\\", "\0")):
            errors.append(f"'val:suffix' is {suffix!r}: it is appended to output file names, so it cannot hold a path "
                          "separator; e.g. suffix: test (or ~ for the run name, '' for none)")
        return errors

    @classmethod
    def parse(cls, mapping: Optional[Mapping[str, Any]], where: str = "val:") -> Tuple["ValOptions", List[str]]:
        section, errors = super().parse(mapping, where)
        return section, errors + (cls.key_errors(mapping) if isinstance(mapping, Mapping) else [])


@dataclass(frozen=True)
class LoggerOptions(Section):
    """``logger``: the log line, checkpoints, and the trackers."""

    print_freq: int = option(100, int, lo=1, example="print_freq: 100")
    save_checkpoint_freq: int = option(5000, int, lo=1, example="save_checkpoint_freq: 5000")
    tb_image_freq: Optional[int] = option(None, int, lo=1, example="tb_image_freq: 5000 (default: save_checkpoint_freq)")
    keep_last_n: Optional[int] = option(None, int, lo=0, example="keep_last_n: 5 (0 or ~: keep every checkpoint)")
    use_tb_logger: bool = option(True, bool, help="TensorBoard event files in tb_logger/<name>/")
    language: Optional[str] = option(None, str, choices=tuple(sorted(MESSAGES)),
                                     help="zh | en; ~: the pipeline's (zh for train_hdr.py)")
    wandb: Any = option(None, help="{project, resume_id, entity}")

    @property
    def image_freq(self) -> int:
        """Training previews in the sinks: ``tb_image_freq``, else at each checkpoint."""
        return self.tb_image_freq or self.save_checkpoint_freq


@dataclass(frozen=True)
class DistOptions(Section):
    """``dist_params``: the process group."""

    backend: Optional[str] = option(None, help="nccl | gloo; ~: nccl on GPUs, gloo on the CPU")
    port: Optional[int] = option(None, int, lo=1, hi=65535, example="port: 29500")


@dataclass(frozen=True)
class LoaderOptions(Section):
    """How a ``datasets:<phase>`` set is loaded (the loader, the sampler's enlargement, the prefetcher); the rest of
    a dataset section is the dataset's own, checked by the dataset class."""

    phase: str = option("", help="train, val or test: set by the loader from the section's name")
    name: Optional[str] = option(None, help="the set's name in logs and results")
    batch_size_per_gpu: Optional[int] = option(None, int, lo=1, hi=MAX_BATCH, example="batch_size_per_gpu: 2",
                                               help="samples per step and process (required for training)")
    num_worker_per_gpu: Optional[int] = option(None, int, lo=0, hi=MAX_WORKERS, example="num_worker_per_gpu: 4",
                                               help="DataLoader workers per process (required for training)")
    dataset_enlarge_ratio: int = option(1, int, lo=1, hi=MAX_ENLARGE, example="dataset_enlarge_ratio: 1")
    use_shuffle: bool = option(True, bool, help="shuffle a training set without a sampler")
    pin_memory: bool = option(False, bool, help="page-locked batches (needed by prefetch_mode: cuda)")
    persistent_workers: bool = option(True, bool, help="keep the workers between epochs")
    prefetch_mode: Optional[str] = option(None, help="~ | cpu | cuda (checked by the dataset and the prefetcher)")
    num_prefetch_queue: int = option(1, int, lo=1, hi=MAX_PREFETCH, example="num_prefetch_queue: 1")

    @property
    def where(self) -> str:
        """``datasets:<phase or name>``, as messages name the section."""
        return f"datasets:{self.phase or self.name or '?'}"


@dataclass(frozen=True)
class RunOptions:
    """The checked options of one run as typed sections. ``name`` and ``model_type`` are required by the loader;
    the components (``network_*``, ``datasets``, ``path``) are kept as read-only mappings for their builders."""

    name: str
    model_type: str
    top: TopOptions
    train: TrainOptions
    val: ValOptions
    logger: LoggerOptions
    dist: DistOptions
    networks: Mapping[str, Any]
    datasets: Mapping[str, Any]
    path: PathOptions
    context: RunContext  # what the program adds (process, folders, seed): not an option

    @classmethod
    def build(cls, opt: Mapping[str, Any]) -> "RunOptions":
        """The sections of an option dict; one :class:`OptionError` lists every bad value (none for options the
        loader checked: ``DiffIR.config.loading.validate_options``)."""
        errors: List[str] = []

        def part(section: Any, key: Optional[str], where: str) -> Any:
            value, more = section.parse(opt.get(key) if key else opt, where)
            errors.extend(more)
            return value

        networks = {k: v for k, v in opt.items() if isinstance(k, str) and k.startswith("network_")}
        built = cls(name=str(opt.get("name", "")), model_type=str(opt.get("model_type", "")),
                    top=part(TopOptions, None, ""), train=part(TrainOptions, "train", "train:"),
                    val=part(ValOptions, "val", "val:"), logger=part(LoggerOptions, "logger", "logger:"),
                    dist=part(DistOptions, "dist_params", "dist_params:"), networks=frozen(networks),
                    datasets=frozen(opt.get("datasets") or {}), path=PathOptions(frozen(opt.get("path") or {})),
                    context=RunContext.from_opt(opt))
        given = (built.train.speed.cudnn_benchmark, built.top.cudnn_benchmark)
        if None not in given and given[0] != given[1]:
            errors.append(f"'train:cudnn_benchmark' ({given[0]!r}) and 'cudnn_benchmark' ({given[1]!r}, the top-level "
                          "spelling) disagree. Fix: keep one of them (e.g. 'train:cudnn_benchmark').")
        raise_all(errors)
        return built

    @property
    def cudnn_benchmark(self) -> bool:
        """``train:cudnn_benchmark``, else the top-level spelling, else true (BasicSR's default)."""
        given = (self.train.speed.cudnn_benchmark, self.top.cudnn_benchmark)
        return next((v for v in given if v is not None), True)


def check_val_options(val: Optional[Mapping[str, Any]]) -> ValOptions:
    """The ``val`` section of options built without the loader (a model or test run made in code); one
    :class:`OptionError` lists every bad value."""
    return ValOptions.build(val or {}, "val:")
