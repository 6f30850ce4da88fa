"""Option values: one table per section of (type, range, default), checked all at once before anything is touched.

Keys are checked by :mod:`DiffIR.config.loading`; this module checks what they hold, so that a wrong value stops the
run before a dataset is read or an experiment folder is created, with every problem listed, each naming its key
and the fix. Component sections (``network_*``, the scheduler, metrics) are checked against their constructor's
signature by :func:`DiffIR.utils.registry.check_kwargs` instead. Objects that can be built without the option
parser (datasets, models) call the section's check here (:func:`check_dataset_values`,
:func:`cudnn_benchmark_errors`) rather than keeping a copy of it.

Numbers written as text: PyYAML follows YAML 1.1, which reads ``5e-4``, ``1e-4`` or ``3e5`` (an exponent without a
dot or without a sign) as *strings*. Users write numbers that way, so :func:`coerce_numbers` turns every string
that reads as a number into one, in place, everywhere except names, types and paths; text that is not a number
where a number is expected is refused by name.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from DiffIR.config.limits import MAX_IMAGE_SIDE, MAX_PATCH, MAX_SYNTHETIC, PATCH_MULTIPLE
from DiffIR.config.sections import DistOptions, LoaderOptions, LoggerOptions, TopOptions, TrainOptions, ValOptions
from DiffIR.config.table import Value
from DiffIR.utils.errors import OptionError
from DiffIR.utils.numbers import as_number, parse_number

__all__ = ["Value", "TOP", "TRAIN", "OPTIM", "REGION_WEIGHTS", "region_weight_values", "LOSS", "MIXUP", "VAL",
           "LOGGER", "DIST", "DATASET", "NETWORK", "NETWORK_LISTS", "SYNTHETIC",
           "coerce_numbers", "name_error", "value_errors", "raise_errors", "check_dataset_values",
           "cudnn_benchmark_errors", "TONE_DOMAIN_DEFAULTS", "tone_domain", "domain_mismatch_errors", "crop_border_errors",
           "gate_domain_errors"]

#: keys whose values are text even when they look like numbers (names, paths, templates)
_TEXT_KEYS = {"name", "type", "model_type", "filename_tmpl", "suffix", "meta_info_file", "check_cache_dir",
              "language", "project", "resume_id", "entity", "backend", "launcher", "root_path"}


def coerce_numbers(node: Any, skip_top: Iterable[str] = ("path",)) -> Any:
    """Turn every string that reads as a number into that number, in place, through nested mappings and lists.

    Names, types, templates, paths (the ``path`` section and ``dataroot_*``) stay text. Returns ``node``.
    """
    def convert(value: Any, key: str) -> Any:
        if key in _TEXT_KEYS or key.startswith("dataroot"):
            return value
        if isinstance(value, str):
            number = parse_number(value)
            return value if number is None else as_number(number)
        if isinstance(value, dict):
            for k in list(value):
                value[k] = convert(value[k], str(k))
            return value
        if isinstance(value, list):
            value[:] = [convert(v, key) for v in value]
        return value

    if isinstance(node, dict):
        for k in list(node):
            if k not in skip_top:
                node[k] = convert(node[k], str(k))
    return node


def _int(lo: Optional[int] = None, example: str = "", **kw: Any) -> Value:
    return Value(int, lo=lo, example=example, **kw)


def _num(example: str = "", **kw: Any) -> Value:
    return Value(float, example=example, **kw)


_FLAG = Value(bool)

TOP: Dict[str, Value] = TopOptions.rows()
TRAIN: Dict[str, Value] = TrainOptions.rows()
#: ``train:region_weights`` (:mod:`DiffIR.models.region_weights`): weights >= 1, LDR thresholds in (0, 1)
REGION_WEIGHTS: Dict[str, Value] = {
    "highlight": _num("highlight: 4.0 (the weight of a clipped pixel; 1: none)", lo=1, default=4.0),
    "shadow": _num("shadow: 2.0 (the weight of a black pixel; 1: none)", lo=1, default=2.0),
    "highlight_threshold": _num("highlight_threshold: 0.9", above=0, below=1, default=0.9),
    "shadow_threshold": _num("shadow_threshold: 0.05", above=0, below=1, default=0.05),
}


def region_weight_errors(section: Any, where: str = "train:region_weights") -> List[str]:
    """What is wrong with a ``train:region_weights`` section (``{}`` or ``true``: every default; ``~``/``false``: off)."""
    if section is None or isinstance(section, bool):
        return []
    if not isinstance(section, Mapping):
        return [f"'{where}' is {section!r}. Fix: write a mapping such as region_weights: {{highlight: 4.0, "
                "shadow: 2.0}, or remove it."]
    errors = [f"'{where}:{key}' is not an option. Fix: use {', '.join(REGION_WEIGHTS)}."
              for key in section if key not in REGION_WEIGHTS]
    return errors + _check_table(section, REGION_WEIGHTS, f"{where}:")


def region_weight_values(section: Any, where: str = "train:region_weights") -> Dict[str, float]:
    """The checked ``train:region_weights`` with defaults filled in; raises OptionError naming every bad key."""
    section = {} if section is None or isinstance(section, bool) else section
    if isinstance(section, Mapping):
        section = dict(section)
    errors = region_weight_errors(section, where)
    if errors:
        raise OptionError("\n".join(errors))
    return {key: float(spec.default if section.get(key) is None else section[key])
            for key, spec in REGION_WEIGHTS.items()}


#: ``train:optim_g`` (Adam, AdamW, SGD); ``betas`` is checked as a pair
OPTIM: Dict[str, Value] = {
    "lr": _num("lr: 2e-4", lo=0),
    "weight_decay": _num("weight_decay: 0", lo=0),
    "eps": _num("eps: 1e-8", above=0),
    "momentum": _num("momentum: 0.9", lo=0),
}
_BETA = _num("betas: [0.9, 0.999]", lo=0, below=1)
#: every loss section ``train:*_opt``
LOSS: Dict[str, Value] = {"loss_weight": _num("loss_weight: 1.0", lo=0)}
MIXUP: Dict[str, Value] = {"mixup": _FLAG, "mixup_beta": _num("mixup_beta: 1.2", above=0), "use_identity": _FLAG}
VAL: Dict[str, Value] = ValOptions.rows()
LOGGER: Dict[str, Value] = LoggerOptions.rows()
DIST: Dict[str, Value] = DistOptions.rows()
#: every ``datasets:<phase>`` section (keys a dataset does not know are refused by the dataset itself)
DATASET: Dict[str, Value] = {
    "gt_size": _int(PATCH_MULTIPLE, "gt_size: 256 (the network halves a patch three times)", multiple=PATCH_MULTIPLE,
                    hi=MAX_PATCH),
    **{k: v for k, v in LoaderOptions.rows().items() if k not in ("phase", "name", "prefetch_mode")},
    "hdr_max": _num("hdr_max: 1000", above=0, default=1000.0),
    "lq_linearize": _FLAG,
    "geometric_augs": _FLAG, "use_flip": _FLAG, "use_hflip": _FLAG, "use_rot": _FLAG,
}

#: sizes of a ``network_*`` section (DiffIRS1/DiffIRS2; the official ones: dim 48, blocks [4, 6, 6, 8], 6 CPEN blocks)
NETWORK: Dict[str, Value] = {
    "dim": _int(1, "dim: 48", hi=1024),
    "inp_channels": _int(1, "inp_channels: 3", hi=64),
    "out_channels": _int(1, "out_channels: 3", hi=64),
    "n_encoder_res": _int(0, "n_encoder_res: 6", hi=64),
    "num_refinement_blocks": _int(0, "num_refinement_blocks: 4", hi=64),
    "n_denoise_res": _int(0, "n_denoise_res: 1", hi=64),
    "timesteps": _int(1, "timesteps: 4", hi=1000),
    "ffn_expansion_factor": _num("ffn_expansion_factor: 2.66", above=0, hi=16),
}
#: list-valued sizes of a ``network_*`` section, checked item by item
NETWORK_LISTS: Dict[str, Value] = {
    "num_blocks": _int(0, "num_blocks: [4, 6, 6, 8]", hi=64),
    "heads": _int(1, "heads: [1, 2, 4, 8]", hi=64),
}

#: the sizes of a dataset's ``synthetic`` generator (``size``: a side, or [height, width]; checked item by item)
SYNTHETIC: Dict[str, Value] = {
    "num_images": _int(1, "num_images: 24", hi=MAX_SYNTHETIC),
    "max_blur": _int(1, "max_blur: 15", hi=1024),
}
_SYNTHETIC_SIDE = _int(1, "size: 192 (or [height, width])", hi=MAX_IMAGE_SIDE)


def _check_table(section: Any, table: Mapping[str, Value], where: str) -> List[str]:
    """Check (and convert in place) the keys of ``table`` present in ``section``."""
    if not isinstance(section, dict):
        return []
    errors = []
    for key, spec in table.items():
        if key in section:
            section[key], error = spec.check(section[key], f"{where}{key}")
            if error:
                errors.append(error)
    return errors


def raise_errors(errors: List[str]) -> None:
    """Raise one :class:`OptionError` holding every message of ``errors`` (nothing when it is empty)."""
    if len(errors) == 1:
        raise OptionError(errors[0])
    if errors:
        raise OptionError("Invalid options:\n  - " + "\n  - ".join(errors))


def _disagree(first: Any, first_key: str, second: Any, second_key: str, same: str) -> List[str]:
    """BasicSR spells some options two ways; both given with different values cannot both be obeyed."""
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return []
    a, b = first.get(first_key.rsplit(":", 1)[-1]), second.get(second_key.rsplit(":", 1)[-1])
    if a is None or b is None or a == b:
        return []
    return [f"'{first_key}' ({a!r}) and '{second_key}' ({b!r}, {same}) disagree. Fix: keep one of them (e.g. '{first_key}')."]


def cudnn_benchmark_errors(opt: Dict[str, Any]) -> List[str]:
    """``train:cudnn_benchmark`` and the top-level ``cudnn_benchmark`` of some BasicSR forks must agree (their
    values are rows of the TRAIN and TOP tables)."""
    train = opt.get("train")
    given = [d.get("cudnn_benchmark") for d in (train, opt) if isinstance(d, dict)]
    if not all(isinstance(v, bool) for v in given):
        return []
    return _disagree(train, "train:cudnn_benchmark", opt, "cudnn_benchmark", "the top-level spelling")


def _val_errors(val: Any) -> List[str]:
    """The ``val`` section: its rows (converted in place) and the checks that span its keys (ValOptions)."""
    if not isinstance(val, dict):
        return []
    return _check_table(val, VAL, "val:") + ValOptions.key_errors(val)


def crop_border_errors(metrics: Any, smallest: Optional[Tuple[str, int, int]], where: str) -> List[str]:
    """Each ``val:metrics`` entry whose ``crop_border`` leaves nothing of ``smallest`` = ``(name, height, width)``,
    the image with the shortest side of the set ``where``: that image's score, and so the set's mean, would be nan."""
    if smallest is None or not isinstance(metrics, Mapping):
        return []
    name, height, width = smallest
    limit = (min(height, width) - 1) // 2  # the most that leaves one pixel of the shorter side
    errors = []
    for key, metric in metrics.items():
        border = metric.get("crop_border") if isinstance(metric, Mapping) else None
        if isinstance(border, int) and not isinstance(border, bool) and border > limit:
            errors.append(
                f"'val:metrics:{key}:crop_border' is {border}, which leaves nothing of '{name}' ({height}x{width} "
                f"pixels, the smallest image of {where}): its score and the set's mean would be nan. Fix: a "
                f"crop_border of at most {limit} (under half the shortest side), e.g. crop_border: 0, or remove the "
                f"small image from the set.")
    return errors


def _synthetic_errors(dataset: Any, where: str) -> List[str]:
    """The sizes of ``<where>:synthetic`` (its keys and kind are checked by the dataset)."""
    syn = dataset.get("synthetic") if isinstance(dataset, dict) else None
    if not isinstance(syn, dict):
        return []
    errors = _check_table(syn, SYNTHETIC, f"{where}:synthetic:")
    size = syn.get("size")
    if isinstance(size, (list, tuple)):
        checked = [_SYNTHETIC_SIDE.check(v, f"{where}:synthetic:size[{i}]") for i, v in enumerate(size)]
        syn["size"] = type(size)(v for v, _ in checked)
        errors += [e for _, e in checked if e]
    elif size is not None:
        syn["size"], error = _SYNTHETIC_SIDE.check(size, f"{where}:synthetic:size")
        errors += [error] if error else []
    return errors


#: the network domain a dataset's options set (``LDR_HDR_PairedDataset``), with the values used where a key is unset
TONE_DOMAIN_DEFAULTS: Dict[str, Any] = {"hdr_max": 1000.0, "tone_curve": "log", "lq_linearize": True}


def tone_domain(dataset: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``hdr_max`` (float), ``tone_curve`` (lower case) and ``lq_linearize`` (bool) of one dataset section, the
    defaults filled in. The one reading of these keys: the datasets, the models (the training set's domain) and
    inference (the domain saved with the weights) all take them from here."""
    dataset = dataset if isinstance(dataset, Mapping) else {}
    value = {key: (default if dataset.get(key) is None else dataset[key])
             for key, default in TONE_DOMAIN_DEFAULTS.items()}
    return {"hdr_max": float(value["hdr_max"]), "tone_curve": str(value["tone_curve"]).lower(),
            "lq_linearize": bool(value["lq_linearize"])}


def domain_mismatch_errors(datasets: Any) -> List[str]:
    """Each validation/test set whose ``hdr_max``, ``tone_curve`` or ``lq_linearize`` differs from the training
    set's. Refused, never just warned: the network is trained in the training set's domain, so a set in another
    feeds it inputs on another scale and inverts its outputs with another curve; its scores (and the best
    checkpoint picked by them) would be wrong, with no sign of it. Data that really has another peak is scaled to
    the training set's hdr_max, not given its own."""
    if not isinstance(datasets, dict) or not isinstance(datasets.get("train"), dict):
        return []
    train = datasets["train"]
    try:
        reference = tone_domain(train)
    except (TypeError, ValueError):  # a bad value: reported by the value table
        return []
    errors = []
    for phase, dataset in datasets.items():
        if phase == "train" or not isinstance(dataset, dict):
            continue
        try:
            domain = tone_domain(dataset)
        except (TypeError, ValueError):
            continue
        for key, want in reference.items():
            if domain[key] == want or any(key in DATASET and DATASET[key].check(d.get(key), key)[1]
                                          for d in (train, dataset)):
                continue  # the same, or a bad value (reported by the value table)
            shown = f"{train[key]!r}" if train.get(key) is not None else f"{want!r} (the default)"
            errors.append(
                f"'datasets:{phase}:{key}' is {domain[key]!r} but 'datasets:train:{key}' is {shown}: the network works "
                f"in the training set's domain, so this set's inputs and scores would be in another. Fix: set "
                f"datasets:{phase}:{key}: {want!r} (the training set's value), or remove it if that is the default.")
    return errors


def gate_domain_errors(opt: Mapping[str, Any]) -> List[str]:
    """Each ``network_*:highlight_gate`` whose tone domain differs from a dataset's: the gate finds the clipped
    pixels by inverting the network input with it, so in another domain it would gate the wrong pixels."""
    datasets = opt.get("datasets")
    errors = []
    for key, net in opt.items():
        gate = net.get("highlight_gate") if isinstance(key, str) and key.startswith("network_") \
            and isinstance(net, Mapping) else None
        if not isinstance(gate, Mapping):
            continue
        for phase, dataset in (datasets.items() if isinstance(datasets, Mapping) else ()):
            if not isinstance(dataset, Mapping):
                continue
            try:
                domain = tone_domain(dataset)
                own = tone_domain(gate)
            except (TypeError, ValueError):  # a bad value: reported by the value tables
                continue
            for name, want in domain.items():
                if own[name] != want:
                    errors.append(f"'{key}:highlight_gate:{name}' is {own[name]!r} but 'datasets:{phase}:{name}' is "
                                  f"{want!r}: the gate would look for clipped pixels in another domain than the "
                                  f"network's input. Fix: set {key}:highlight_gate:{name}: {want!r}.")
    return errors


def _dataset_errors(dataset: Any, where: str) -> List[str]:
    return _check_table(dataset, DATASET, f"{where}:") + _synthetic_errors(dataset, where) + _disagree(
        dataset, f"{where}:use_flip", dataset, f"{where}:use_hflip", "BasicSR's name for the same option")


def check_dataset_values(opt: Dict[str, Any], where: str) -> None:
    """Every bad value of one ``datasets:<phase>`` section as one :class:`OptionError` (for a dataset built
    directly); numeric text becomes a number in place."""
    raise_errors(_dataset_errors(opt, where))


def name_error(name: Any) -> Optional[str]:
    """Why ``name`` cannot name an experiment/results folder (``experiments/<name>``), or None."""
    fix = "Fix: use a plain folder name such as name: train_DiffIRS1_hdr (the run writes to experiments/<name>/)."
    if not isinstance(name, str) or not name.strip():
        return f"'name' is {name!r}: it must be a non-empty folder name. {fix}"
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (os.path.isabs(name) or any(s in name for s in seps) or name.strip() in (".", "..") or "\0" in name
            or name != name.strip()):
        return (f"'name' is {name!r}: it must be a plain folder name, not a path (no '/', '\\', '..', leading or "
                f"trailing spaces). {fix}")
    return None


def _optimizer_errors(optim: Any) -> List[str]:
    errors = _check_table(optim, OPTIM, "train:optim_g:")
    betas = optim.get("betas") if isinstance(optim, dict) else None
    if betas is not None:
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            errors.append(f"'train:optim_g:betas' is {betas!r}. Fix: give two numbers in [0, 1), e.g. betas: [0.9, 0.999].")
        else:
            checked = [_BETA.check(b, f"train:optim_g:betas[{i}]") for i, b in enumerate(betas)]
            optim["betas"] = [v for v, _ in checked]
            errors += [e for _, e in checked if e]
    return errors


def _network_errors(net: Any, where: str) -> List[str]:
    """The sizes of one ``network_*`` section (types and unknown keys are checked against the network's signature)."""
    errors = _check_table(net, NETWORK, f"{where}:")
    for key, spec in NETWORK_LISTS.items():
        items = net.get(key) if isinstance(net, dict) else None
        if isinstance(items, list):
            checked = [spec.check(v, f"{where}:{key}[{i}]") for i, v in enumerate(items)]
            items[:] = [v for v, _ in checked]
            errors += [e for _, e in checked if e]
    return errors


def _training_requirements(opt: Mapping[str, Any]) -> List[str]:
    """What a training run cannot start without (a test or check of the same file does not need it)."""
    errors = []
    train = opt.get("train")
    if "train" not in opt:  # a section of the wrong kind is reported by options.section_errors
        errors.append("training needs a 'train' section (optim_g, total_iter, losses). Fix: add one, e.g. from "
                      "options/train_DiffIRs1_hdr.yml.")
    elif isinstance(train, dict) and train.get("total_iter") is None:
        errors.append("'train:total_iter' is missing. Fix: set the number of iterations, e.g. total_iter: 300000.")
    datasets = opt.get("datasets")
    if ("datasets" not in opt or isinstance(datasets, dict)) and "train" not in (datasets or {}):
        errors.append("training needs 'datasets:train'. Fix: add the training set (type, dataroot_lq, dataroot_gt, ...).")
    elif isinstance(datasets, dict) and isinstance(datasets["train"], dict):
        for key in ("batch_size_per_gpu", "num_worker_per_gpu"):
            if datasets["train"].get(key) is None:
                errors.append(f"'datasets:train:{key}' is missing. Fix: set it, e.g. {key}: 2.")
    val = opt.get("val")
    if (isinstance(val, dict) and val.get("save_best") is not None and isinstance(datasets, dict)
            and not any(phase != "train" for phase in datasets)):
        errors.append("'val:save_best' is set, but there is no validation set to pick the best checkpoint on. Fix: add "
                      "datasets:val (LDR/GT folders) or remove save_best.")
    return errors


def value_errors(opt: Dict[str, Any], training: bool = False) -> List[str]:
    """Every problem with the option values of ``opt``, one message each; converts numeric text in place.

    ``training``: also require what a training run needs (``train:total_iter``, ``datasets:train`` with its
    batch size and workers).
    """
    coerce_numbers(opt)
    errors = []
    if "name" in opt:
        if isinstance(opt["name"], int) and not isinstance(opt["name"], bool):
            opt["name"] = str(opt["name"])
        error = name_error(opt["name"])
        if error:
            errors.append(error)
    errors += _check_table(opt, TOP, "")
    train = opt.get("train")
    errors += _check_table(train, TRAIN, "train:")
    if isinstance(train, dict):
        errors += _optimizer_errors(train.get("optim_g"))
        for key, loss in train.items():
            if key.endswith("_opt") and key != "optim_g":
                errors += _check_table(loss, LOSS, f"train:{key}:")
        errors += _check_table(train.get("mixing_augs"), MIXUP, "train:mixing_augs:")
        errors += region_weight_errors(train.get("region_weights"))
    for key, net in opt.items():
        if isinstance(key, str) and key.startswith("network_"):
            errors += _network_errors(net, key)
    errors += _val_errors(opt.get("val")) + cudnn_benchmark_errors(opt)
    logger = opt.get("logger")
    errors += _check_table(logger, LOGGER, "logger:")
    if isinstance(logger, dict) and logger.get("wandb") is not None and not isinstance(logger["wandb"], dict):
        errors.append(f"'logger:wandb' is {logger['wandb']!r}. Fix: write a mapping such as wandb: {{project: "
                      "diffir-hdr} (wandb logging) or wandb: {project: ~} (none), or remove it.")
    errors += _check_table(opt.get("dist_params"), DIST, "dist_params:")
    datasets = opt.get("datasets")
    for phase, dataset in (datasets.items() if isinstance(datasets, dict) else ()):
        errors += _dataset_errors(dataset, f"datasets:{phase}")
    errors += domain_mismatch_errors(datasets) + gate_domain_errors(opt)
    if training:
        errors += _training_requirements(opt)
    return errors
