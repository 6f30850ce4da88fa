"""Test pipeline: ``python test.py -opt options/test_DiffIRs1_hdr.yml``.

Runs every ``val*``/``test*`` dataset through the shared evaluation loop (``DiffIR.models.evaluation``, the same
code validation uses during training), prints one table of every metric per set (the model and its input), and
writes it under ``results/NAME/`` as ``metrics.csv`` and ``metrics.json`` (the JSON adds per-image scores).
With ``val.save_img`` the outputs go to ``results/NAME/visualization/<set>/`` as linear HDR files in the GT
files' units plus tone-mapped PNG previews. The first ``val.num_preview_images`` images of each set (default 4) are
always drawn as one grid, ``visualization/<set>/preview_<suffix>.png`` (input | output | GT | error map).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os.path as osp
import time
from typing import Any, Dict, List, Optional

from DiffIR.data import build_dataloader, build_dataset, loader_options
from DiffIR.metrics import check_metric_options
from DiffIR.models import MODEL_REGISTRY, build_model
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.config.sections import RunOptions
from DiffIR.models.memory import inference_oom_message, out_of_memory_stops
from DiffIR.models.evaluation import (EvalResult, check_crop_borders, evaluate_dataset,
                                      output_suffix, publish_previews)
from DiffIR.utils.logger import Messages, begin_run_log, dict2str, get_env_info, get_root_logger
from DiffIR.utils.misc import atomic_write_bytes, mkdir_and_rename, set_random_seed
from DiffIR.config.loading import parse_options
from DiffIR.utils.errors import OptionError
from DiffIR.utils.runlock import hold_run_lock, holds_run_locks

__all__ = ["test_pipeline", "check_test_options", "check_test_outputs", "results_table", "format_table"]
__test__ = False  # a pipeline named like a test module (BasicSR's name), not a test: pytest must not collect it


def _eval_phases(opt: Dict[str, Any]) -> List[str]:
    return [p for p in sorted(opt.get("datasets") or {}) if p.startswith(("val", "test"))]


def check_test_options(opt: Dict[str, Any], file: str = "<options>") -> RunOptions:
    """Everything a test run needs, checked before any data is read or generated.

    A ``val*``/``test*`` dataset, trained weights (``path.pretrain_network_g``), valid ``val`` values and metric
    options, and, for a model whose prior needs the ground truth (DiffIR stage 1), a GT folder in every set.
    Returns the run's sections.
    """
    phases = _eval_phases(opt)
    if not phases:
        raise OptionError(f"{file} has no test set: add 'datasets: {{test_1: {{...}}}}' (or val_1, ...) with the "
                          "LDR/GT folders to evaluate")
    cls = MODEL_REGISTRY.get(opt.get("model_type"), "model_type")
    if getattr(cls, "needs_gt_for_inference", False):
        for phase in phases:
            if not opt["datasets"][phase].get("dataroot_gt"):
                raise OptionError(
                    f"'datasets:{phase}' has no dataroot_gt, but {opt['model_type']} (DiffIR stage 1) builds its prior "
                    "from the HDR ground truth, so it can only run on test sets with GT (its scores are an oracle "
                    "upper bound). Add the GT folder as dataroot_gt; LDR-only inference arrives with stage 2.")
    path = opt.get("path") or {}
    weights = path.get("pretrain_network_g")
    if not weights:
        raise OptionError(f"'path:pretrain_network_g' is not set in {file}: testing needs trained weights, e.g. "
                          "experiments/NAME/models/net_g_latest.pth")
    if not osp.isfile(weights):
        raise OptionError(f"'path:pretrain_network_g' = '{weights}' does not exist. Train first (python train_hdr.py "
                          "-opt ...) or point it at a checkpoint file.")
    options = RunOptions.build(opt)
    check_metric_options(options.val.metrics)
    return options


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _inside(path: str, folder: str) -> bool:
    """True if ``path`` is ``folder`` or lies under it, comparing real paths (links resolved)."""
    path, folder = osp.realpath(path), osp.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(osp.sep) + osp.sep)


def check_test_outputs(opt: Dict[str, Any]) -> None:
    """What ``test.py`` writes cannot land on its inputs or on other outputs; checked before anything is touched.

    ``results/NAME/`` is archived (renamed) and then written: no dataset folder may lie inside it. Each set writes
    to ``visualization/<set name>/``: set names must be plain folder names and distinct.
    """
    results = opt["path"]["results_root"]
    seen: Dict[str, str] = {}
    for phase in _eval_phases(opt):
        dataset_opt = opt["datasets"][phase]
        name = str(dataset_opt.get("name", phase))
        if not _plain_name(name):
            raise OptionError(f"'datasets:{phase}:name' is {name!r}: it names the output folder visualization/<name>/, "
                              "so it must be a plain folder name (no '/', not '.' or '..'), e.g. name: ValSet")
        if name in seen:
            raise OptionError(f"'datasets:{phase}:name' and 'datasets:{seen[name]}:name' are both {name!r}: their "
                              "outputs and scores would overwrite each other. Give each test set its own name.")
        seen[name] = phase
        for key in ("dataroot_lq", "dataroot_gt", "dataroot_dgain", "meta_info_file"):
            folder = dataset_opt.get(key)
            if isinstance(folder, str) and folder and _inside(folder, results):
                raise OptionError(f"'datasets:{phase}:{key}' = '{folder}' lies inside this run's results folder "
                                  f"'{results}', which test.py archives and writes into. Move the data elsewhere or "
                                  "change 'name'.")


def _fmt(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4f}"


def results_table(results: Dict[str, EvalResult], metric_names: List[str]) -> List[List[str]]:
    """Rows ``[dataset, source, images, metric...]``: per set one ``model`` row and, if scored, one ``input`` row."""
    rows = [["dataset", "source", "images", *metric_names]]
    for name, res in results.items():
        rows.append([name, "model", str(res.images), *(_fmt(res.metrics.get(m)) for m in metric_names)])
        if res.baseline:
            rows.append([name, "input", str(res.images), *(_fmt(res.baseline.get(m)) for m in metric_names)])
    return rows


def format_table(rows: List[List[str]]) -> str:
    """Left-aligned text columns for the log."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _json_value(v: Any) -> Any:
    """JSON has no inf/nan: write them as strings (a PSNR of identical images is inf)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def _write_results(opt: Dict[str, Any], results: Dict[str, EvalResult], rows: List[List[str]]) -> Dict[str, str]:
    root = opt["path"]["results_root"]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    csv_path, json_path = osp.join(root, "metrics.csv"), osp.join(root, "metrics.json")
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    path = opt["path"]
    doc = {
        "name": opt["name"],
        "model_type": opt["model_type"],
        "checkpoint": path.get("pretrain_network_g"),
        "param_key": path.get("param_key_g", "params"),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "metric_options": (opt.get("val") or {}).get("metrics") or {},
        "sets": {name: {"images": r.images, "has_gt": r.has_gt, "metrics": r.metrics, "input": r.baseline,
                        "per_image": r.per_image, "outputs": r.saved} for name, r in results.items()},
    }
    text = json.dumps(_json_value(doc), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(json_path, (text + "\n").encode("utf-8"))
    return {"csv": csv_path, "json": json_path}


@holds_run_locks
def test_pipeline(root_path: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Parse options, check them, evaluate every test set; returns ``{results, csv, json, results_root}``."""
    opt, args = parse_options(root_path, is_train=False, argv=argv)
    if opt.get("launcher", "none") != "none":
        raise OptionError("test.py runs in one process; drop --launcher (one GPU or the CPU is used)")
    opt["dist"], opt["rank"], opt["world_size"] = False, 0, 1
    options = check_test_options(opt, args.opt)
    set_random_seed(options.top.manual_seed or 0)
    msg = Messages(options.logger.language or "zh")

    path = opt["path"]
    check_test_outputs(opt)
    hold_run_lock(path["results_root"], "results", get_root_logger().warning)  # results/NAME.lock: one test run per name
    # data and model first: a problem with either must not archive an earlier results folder of this name
    logger = begin_run_log()  # records are kept until the log file exists
    loaders = []
    for phase in _eval_phases(opt):
        dataset_opt = opt["datasets"][phase]
        dataset = build_dataset(dataset_opt)
        check_crop_borders(options.val.metrics, dataset)
        loaders.append(build_dataloader(dataset, loader_options(dataset_opt), options.context.num_gpu, False, None,
                                        options.context.seed))
        logger.info(msg("test_set", name=dataset_opt.get("name", phase), n=len(dataset)))
    model = build_model(opt, options)
    logger.info(msg("test_device", device=model.device))
    if model.device.type == "cpu":
        keep_freed_memory()

    try:
        mkdir_and_rename(path["results_root"])
    except OSError as e:
        raise OSError(f"Cannot set up the results folder '{path['results_root']}': {e.strerror or e} "
                      f"({e.filename or path['results_root']}). Make results/ writable, or run test.py from a "
                      "copy of the project where you can write.") from None
    log_file = osp.join(path["log"], f"test_{opt['name']}_{time.strftime('%Y%m%d_%H%M%S')}.log")
    logger = get_root_logger(log_file=log_file)
    logger.info(get_env_info())
    logger.info("\n" + dict2str(opt))
    val = options.val
    if not val.metrics and not val.save_img and not val.num_preview_images:
        logger.warning("val has no metrics and save_img is off: the run will neither score nor save anything")

    results: Dict[str, EvalResult] = {}
    suffix = output_suffix(val.suffix, opt["name"])
    for loader in loaders:
        name = loader.dataset.opt.get("name", "test")
        save_dir = osp.join(path["visualization"], name) if val.save_img else None
        with out_of_memory_stops(lambda: inference_oom_message(model.device, f"test set {name}", val.tiling.tile_size)):
            res = evaluate_dataset(model, loader, val, baseline=val.baseline, save_dir=save_dir,
                                   suffix=suffix, desc=f"Test {name}", overwrite=False)
        if not res.has_gt:
            logger.warning(msg("test_no_gt", name=name))
        if save_dir is not None:
            logger.info(msg("test_outputs", name=name, n=len(res.saved), path=save_dir))
        preview = publish_previews(res, osp.join(path["visualization"], name), suffix)
        if preview is not None:
            logger.info(msg("test_preview", name=name, n=len(res.previews), path=preview.path))
        results[name] = res

    metric_names = list(val.metrics)
    rows = results_table(results, metric_names)
    logger.info(msg("test_results") + "\n" + format_table(rows))
    files = _write_results(opt, results, rows)
    logger.info(msg("test_written", **files))
    return {"results": results, "results_root": path["results_root"], **files}


test_pipeline.__test__ = False  # also when imported into a test module by name
