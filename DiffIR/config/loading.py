"""Command line + YAML options: parsing, overrides, validation of known keys, derived paths."""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import yaml

from DiffIR.config.sections import (SELF_ENSEMBLE_SIZES, DistOptions, LoggerOptions, TopOptions, TrainOptions,
                                    ValOptions)
from DiffIR.utils.logger import get_root_logger
from DiffIR.utils.misc import decode_utf8, path_encoding_problem
from DiffIR.config.schema import coerce_numbers, value_errors
from DiffIR.config.table import Section, option
from DiffIR.utils.errors import OptionError, did_you_mean

# Keys each section understands. Sections holding components (networks, datasets, losses, optimizer,
# scheduler, metrics) are checked by the component's own builder against its signature instead.
TOP_KEYS = {
    "name", "model_type", "num_gpu", "datasets", "path", "train", "val", "logger", "dist_params", "cudnn_benchmark",
    *TopOptions.rows(),
    # set by the program, allowed in files for BasicSR compatibility
    "is_train", "dist", "rank", "world_size", "auto_resume", "launcher", "root_path",
}
PATH_KEYS = {"resume_state", "root", "experiments_root", "models", "training_states", "log", "visualization",
             "results_root", "ignore_resume_networks"}
PATH_PREFIXES = ("pretrain_network_", "param_key_", "strict_load_")
TRAIN_KEYS = set(TrainOptions.rows())
TRAIN_SUFFIXES = ("_opt",)  # losses: pixel_opt, perceptual_opt, ...
MIXUP_KEYS = {"mixup", "mixup_beta", "use_identity"}
VAL_KEYS = set(ValOptions.rows())
LOGGER_KEYS = set(LoggerOptions.rows())


@dataclass(frozen=True)
class WandbOptions(Section):
    """``logger:wandb`` (BasicSR's keys): a ``project`` turns the wandb sink on (DiffIR/utils/wandb_sink.py)."""

    project: Optional[str] = option(None, str, example="project: diffir-hdr", help="wandb project; ~: no wandb")
    resume_id: Optional[str] = option(None, str, example="resume_id: '1a2b3c4d'",
                                      help="the wandb run to continue; ~: the one saved in the experiment folder")
    entity: Optional[str] = option(None, str, example="entity: my-team", help="wandb team or user; ~: yours")


WANDB_KEYS = set(WandbOptions.rows())
DIST_KEYS = set(DistOptions.rows())


def _unknown(keys: Iterable[str], known: Iterable[str], where: str, file: str,
             prefixes: Tuple[str, ...] = (), suffixes: Tuple[str, ...] = ()) -> List[str]:
    known = set(known)
    errors = []
    for k in keys:
        if k in known or k.startswith(prefixes) or k.endswith(suffixes) or (where == "" and k.startswith("network_")):
            continue
        errors.append(f"unknown key '{where}{k}'{did_you_mean(k, sorted(known))}")
    return errors


#: ``train`` sub-sections that must be mappings when given (besides every loss ``*_opt``); region_weights takes
#: ``~``/``true``/``false`` too (schema.region_weight_errors)
TRAIN_MAPPINGS = ("optim_g", "scheduler", "mixing_augs")


def _describe(value: Any) -> str:
    if value is None:
        return "~ (empty)"
    kind = {str: "a text", bool: "true/false", int: "a number", float: "a number", list: "a list"}.get(type(value))
    return f"{value!r} ({kind or type(value).__name__})"


def section_errors(opt: Dict[str, Any]) -> List[str]:
    """Each section that must be a mapping (``network_*``, ``path``, ``train``, ``logger``, ``dist_params``, the
    datasets, ``train:optim_g``/``scheduler``/``mixing_augs``/``*_opt``) but holds ``~`` or a value of another
    kind. ``val: ~`` is left to the validation checks; ``*_opt: ~`` is BasicSR's way to switch a loss off and
    means just that."""
    def error(key: str, value: Any) -> str:
        return (f"'{key}' is {_describe(value)}, but it must be a mapping of options. Fix: indent its keys under "
                f"'{key.rsplit(':', 1)[-1]}:' (see options/train_DiffIRs1_hdr.yml), or delete the line if the "
                "section is not needed.")

    errors = [error(key, opt[key]) for key in ("path", "train", "logger", "dist_params", "datasets")
              if key in opt and not isinstance(opt[key], dict)]
    errors += [error(key, value) for key, value in opt.items()
               if isinstance(key, str) and key.startswith("network_") and not isinstance(value, dict)]
    if "val" in opt and opt["val"] is not None and not isinstance(opt["val"], dict):
        errors.append(error("val", opt["val"]))
    train = opt.get("train")
    for key, value in (train.items() if isinstance(train, dict) else ()):
        is_loss = str(key).endswith("_opt") and key != "optim_g"
        if is_loss and value is None:
            continue  # BasicSR: a loss section left empty is switched off
        if (key in TRAIN_MAPPINGS or is_loss) and not isinstance(value, dict):
            errors.append(error(f"train:{key}", value) + (" (Write '~' or delete the line to train without this "
                                                          "loss.)" if is_loss else ""))
    datasets = opt.get("datasets")
    for phase, dataset in (datasets.items() if isinstance(datasets, dict) else ()):
        if not isinstance(dataset, dict):
            errors.append(error(f"datasets:{phase}", dataset))
    return errors


#: dataset keys that hold a path (besides every ``dataroot*``)
DATASET_PATH_KEYS = ("meta_info_file", "check_cache_dir")


def path_errors(opt: Dict[str, Any]) -> List[str]:
    """Each path of the options (``path:*``, the datasets' ``dataroot*``, ``meta_info_file``, ``check_cache_dir``)
    that cannot be encoded in the file-system encoding: the OS could not be asked for it, and a check of such a
    path would just say it does not exist."""
    places = [(f"path:{k}", v) for k, v in (opt["path"].items() if isinstance(opt.get("path"), dict) else ())]
    datasets = opt.get("datasets")
    for phase, dataset in (datasets.items() if isinstance(datasets, dict) else ()):
        places += [(f"datasets:{phase}:{k}", v) for k, v in (dataset.items() if isinstance(dataset, dict) else ())
                   if str(k).startswith("dataroot") or k in DATASET_PATH_KEYS]
    errors = []
    for key, value in places:
        problem = path_encoding_problem(value)
        if problem:
            errors.append(f"'{key}' = {problem}. Fix: write the path as it is on disk (a \\u escape or a name "
                          "decoded with the wrong encoding gives such characters), or rename the file or folder.")
    return errors


def validate_options(opt: Dict[str, Any], file: str = "<options>", training: bool = False) -> None:
    """Report every unknown key and every bad value, all at once, naming the file (values: ``DiffIR.config.schema``).

    Numeric text (``lr: 5e-4``, which YAML 1.1 reads as a string) becomes a number in place. ``training``: also
    require what a training run needs.
    """
    errors = [f"the required key '{key}' is missing" for key in ("name", "model_type") if key not in opt]
    errors += _unknown(opt, TOP_KEYS, "", file)
    sections = [("path", PATH_KEYS, PATH_PREFIXES, ()), ("train", TRAIN_KEYS, (), TRAIN_SUFFIXES),
                ("val", VAL_KEYS, (), ()), ("logger", LOGGER_KEYS, (), ()), ("dist_params", DIST_KEYS, (), ())]
    errors += section_errors(opt) + path_errors(opt)
    for name, known, prefixes, suffixes in sections:
        sec = opt.get(name)
        if isinstance(sec, dict):
            errors += _unknown(sec, known, f"{name}:", file, prefixes, suffixes)
    mix = (opt.get("train") or {}).get("mixing_augs") if isinstance(opt.get("train"), dict) else None
    if isinstance(mix, dict):
        errors += _unknown(mix, MIXUP_KEYS, "train:mixing_augs:", file)
    wandb = (opt.get("logger") or {}).get("wandb") if isinstance(opt.get("logger"), dict) else None
    if isinstance(wandb, dict):
        errors += _unknown(wandb, WANDB_KEYS, "logger:wandb:", file) + WandbOptions.check(wandb, "logger:wandb:")
    for phase in (opt["datasets"] if isinstance(opt.get("datasets"), dict) else ()):
        if not (phase == "train" or str(phase).startswith(("val", "test"))):
            errors.append(f"unknown dataset phase 'datasets:{phase}': use 'train', 'val*' or 'test*'")
    errors += value_errors(opt, training=training)
    if errors:
        raise OptionError(f"Invalid options in {file}:\n  - " + "\n  - ".join(errors) +
                          "\nFix these entries (an unknown key is often a typo that would otherwise be silently "
                          "ignored).")


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of an option file names the same key twice (PyYAML would silently keep the last value)."""

    def __init__(self, source: str, key: str, first_line: int, second_line: int) -> None:
        self.problem = (f"the key '{key}' is given twice (lines {first_line} and {second_line}); only one of the two "
                        "values could be used")
        super().__init__(f"{source}: {self.problem}. Fix: delete one of the two lines (or merge them).")


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping, naming the key path and both lines.

    Merge keys (``<<: *base``) may still be overridden by the mapping's own keys, as YAML intends.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_duplicates(node)
        return self.construct_document(node)

    def _check_duplicates(self, root: yaml.Node) -> None:
        seen, todo = set(), [(root, "")]
        while todo:
            node, where = todo.pop()
            if id(node) in seen:  # an alias of a node already checked (or a recursive one)
                continue
            seen.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                todo += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]  # 'a[0]:b' 
            if not isinstance(node, yaml.MappingNode):
                continue
            first: Dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                path = f"{where}:{key}" if where else str(key)
                if key in first:
                    raise DuplicateKeyError(self.name, path, first[key], line)
                first[key] = line
                todo.append((value_node, path))


def _parse_value(item: str, text: str) -> Any:
    """The YAML value of one ``--force_yml`` override; a parse error names the override and the fix."""
    if text == "":
        return None
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise OptionError(f"--force_yml '{item}': the value {text!r} is not valid YAML ({problem}). Fix: write a "
                          "YAML value, quoting text with special characters, e.g. "
                          "--force_yml \"val:suffix='run: 2'\"") from None


def apply_overrides(opt: Dict[str, Any], overrides: Optional[List[str]]) -> None:
    """``key:sub=value`` strings (YAML values) replace nested option entries."""
    for item in overrides or []:
        if "=" not in item:
            raise OptionError(f"--force_yml '{item}' must look like key:subkey=value")
        path, value = item.split("=", 1)
        keys = path.split(":")
        node = opt
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise OptionError(f"--force_yml '{item}': '{k}' is not a mapping")
        node[keys[-1]] = _parse_value(item, value)


def load_yaml(path: str) -> Dict[str, Any]:
    """An option file as a dict, with numeric text (``lr: 5e-4``, a string for YAML 1.1) read as numbers."""
    problem = path_encoding_problem(path)
    if problem:
        raise OptionError(f"The option file path {problem}. Fix: rename the file (or its folder) to a name in that "
                          "encoding, or run under a UTF-8 locale (e.g. LANG=C.UTF-8).")
    if not osp.isfile(path):
        raise FileNotFoundError(f"Option file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = decode_utf8(data, f"Option file {path}", "save the file as UTF-8 (in most editors: Save as / "
                                                         "Encoding: UTF-8), or remove the characters at that place.")
    except ValueError as e:
        raise OptionError(str(e)) from None
    loader = StrictLoader(text)
    loader.name = path  # YAML errors name the file (its text was read here)
    try:
        opt = loader.get_single_data()
    except DuplicateKeyError as e:
        raise OptionError(f"Option file {e}") from None
    except yaml.YAMLError as e:
        raise OptionError(f"Option file {path} is not valid YAML: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(opt, dict):
        raise OptionError(f"Option file {path} must hold a mapping at the top level")
    return coerce_numbers(opt)


def build_arg_parser(is_train: bool = True) -> argparse.ArgumentParser:
    """The command line of train*.py (``is_train``) and test.py; test.py adds ``--self_ensemble``."""
    parser = argparse.ArgumentParser(description="DiffIR-HDR training" if is_train else "DiffIR-HDR test")
    parser.add_argument("-opt", type=str, required=True, help="Path to the option YAML file.")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none", help="job launcher")
    parser.add_argument("--auto_resume", action="store_true", help="continue from the newest training state")
    parser.add_argument("--debug", action="store_true", help="tiny frequencies and a debug_ experiment name")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help="set by torch.distributed.launch")
    parser.add_argument("--force_yml", nargs="+", default=None,
                        help="override options: key:subkey=value (YAML value), e.g. train:total_iter=100")
    if not is_train:
        parser.add_argument("--self_ensemble", type=int, choices=SELF_ENSEMBLE_SIZES, default=None,
                            help="average each output over 4 flips or 8 flips/transposes of the input (0: off); "
                                 "overrides val:self_ensemble")
    return parser


def resolve_num_gpu(value: Any) -> int:
    if value in (None, "auto"):
        return torch.cuda.device_count()
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OptionError(f"num_gpu must be an integer or 'auto', got {value!r}") from None


def ineffective_option_warnings(opt: Mapping[str, Any], file: str, is_train: bool) -> List[str]:
    """Options that do nothing as written, each with what happens instead (warned, not refused: the run is still
    meaningful, just not what the file seems to ask for)."""
    warnings = []
    raw_gpus = opt.get("num_gpu", "auto")
    if raw_gpus not in (None, "auto") and resolve_num_gpu(raw_gpus) >= 1 and not torch.cuda.is_available():
        warnings.append(
            f"{file}: num_gpu is {raw_gpus}, but torch sees no GPU here (torch.cuda.is_available() is False: no GPU, "
            f"no driver, or a CPU-only torch build): the run uses the CPU. Fix: set num_gpu: 0 (or auto) to run on the "
            f"CPU without this warning, or install the CUDA build of torch for your driver.")
    val_sets = [str(phase) for phase in (opt.get("datasets") or {}) if str(phase) != "train"]
    if is_train and val_sets and not opt.get("val"):
        warnings.append(
            f"{file}: 'val' is {'missing' if 'val' not in opt else 'empty'}, so "
            f"{', '.join(f'datasets:{p}' for p in val_sets)} is never scored: validation is off (no metrics, no "
            f"val_freq) and the run ends without scores or a best checkpoint. Fix: give val its metrics and "
            f"val_freq, e.g. val: {{val_freq: 5000, metrics: {{psnr: {{type: calculate_psnr, crop_border: 0}}}}}}, "
            f"or remove the validation set(s).")
    return warnings


#: what each ``--launcher`` needs in the environment (set by torchrun / torch.distributed.launch, or by SLURM's srun)
LAUNCHER_ENVIRONMENT = {"pytorch": ("RANK", "WORLD_SIZE"), "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST")}


def missing_launcher_environment(launcher: str, environ: Mapping[str, str]) -> Optional[str]:
    """The warning for a ``--launcher`` whose environment is missing (the program was started directly, not by the
    launcher), else None. Such a run is one plain process (as ``--launcher none``): a process group of one would
    only take the rendezvous port, and SLURM's variables would be a KeyError."""
    missing = [key for key in LAUNCHER_ENVIRONMENT.get(launcher, ()) if key not in environ]
    if not missing:
        return None
    start = ("torchrun --nproc_per_node=N <script> ... --launcher pytorch" if launcher == "pytorch"
             else "srun ... <script> ... --launcher slurm")
    return (f"--launcher {launcher}, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: this "
            f"process was not started by the launcher, so it runs as one plain process (as --launcher none). Fix: "
            f"start it with {start}, or drop --launcher.")


def finalize_options(opt: Dict[str, Any], root_path: str, is_train: bool, file: str = "<options>",
                     debug: bool = False, require_training: bool = False) -> Dict[str, Any]:
    """Validate and fill the derived entries (paths, phases, num_gpu) of a loaded option dict.

    ``require_training``: the options start a training run, so its sections must be there (a dataset check of
    the same file does not need them).
    """
    validate_options(opt, file, training=require_training)
    for warning in ineffective_option_warnings(opt, file, require_training):
        get_root_logger().warning(warning)
    opt["is_train"] = is_train
    opt["num_gpu"] = resolve_num_gpu(opt.get("num_gpu", "auto"))
    if debug and not opt["name"].startswith("debug"):
        opt["name"] = "debug_" + opt["name"]
    for phase, dataset in (opt.get("datasets") or {}).items():
        dataset["phase"] = phase.split("_")[0]
        dataset.setdefault("scale", opt.get("scale", 1))
        for key in ("dataroot_gt", "dataroot_lq", "dataroot_dgain"):
            if isinstance(dataset.get(key), str):
                dataset[key] = osp.expanduser(dataset[key])
    path = opt.setdefault("path", {}) or {}
    opt["path"] = path
    for key, val in list(path.items()):
        if val is not None and ("resume_state" in key or "pretrain_network" in key):
            path[key] = osp.expanduser(val)
    if is_train:
        exp = osp.join(root_path, "experiments", opt["name"])
        derived = {"experiments_root": exp, "models": osp.join(exp, "models"),
                   "training_states": osp.join(exp, "training_states"), "log": exp,
                   "visualization": osp.join(exp, "visualization")}
    else:
        results = osp.join(root_path, "results", opt["name"])
        derived = {"results_root": results, "log": results, "visualization": osp.join(results, "visualization")}
    derived["root"] = root_path
    for key, value in derived.items():  # an option file dumped by an earlier run carries them: same values, no noise
        given = path.get(key)
        if given is not None and osp.abspath(osp.expanduser(str(given))) != osp.abspath(value):
            get_root_logger().warning(
                f"{file}: path:{key} is {given!r}, but a run always writes to {value!r} (experiments/<name>/ for "
                "training, results/<name>/ for tests, beside the entry script); the option is ignored. "
                "Change 'name' to write elsewhere, or remove the key.")
    path.update(derived)
    if is_train and debug:
        opt.setdefault("val", {})
        if opt.get("val") is not None:
            opt["val"]["val_freq"] = 8
        opt.setdefault("logger", {})
        opt["logger"]["print_freq"] = 1
        opt["logger"]["save_checkpoint_freq"] = 8
    return opt


def parse_options(root_path: str, is_train: bool = True, argv: Optional[List[str]] = None
                  ) -> Tuple[Dict[str, Any], argparse.Namespace]:
    """Parse the command line and the YAML file into the option dict every pipeline uses.

    ``args.user_options`` keeps what the user wrote (the file with ``--force_yml`` and ``--self_ensemble``
    applied), without the entries the program derives: a training run saves it as ``options_NAME.yml``.
    """
    args = build_arg_parser(is_train).parse_args(argv)
    opt = load_yaml(args.opt)
    apply_overrides(opt, args.force_yml)
    if getattr(args, "self_ensemble", None) is not None:
        opt["val"] = {**(opt.get("val") or {}), "self_ensemble": args.self_ensemble}
    args.user_options = copy.deepcopy(opt)
    opt["auto_resume"] = args.auto_resume
    launcher_problem = missing_launcher_environment(args.launcher, os.environ)
    if launcher_problem:
        get_root_logger().warning(launcher_problem)
        args.launcher = "none"
    opt["launcher"] = args.launcher
    if args.launcher != "none" and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    finalize_options(opt, root_path, is_train, file=args.opt, debug=args.debug, require_training=is_train)
    return opt, args


def dump_options(opt: Dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(opt, f, sort_keys=False, allow_unicode=True)
