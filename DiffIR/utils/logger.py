"""Logging for people: a root logger, the per-iteration message line with ETA, TensorBoard, and log language."""
from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Any, Dict, Optional

from DiffIR.utils.dist import get_dist_info, master_only
from DiffIR.utils.misc import format_duration

LOGGER_NAME = "DiffIR"
_initialized = False

# Every user-facing sentence of the pipelines, in both languages. Chinese is the default of the HDR
# pipeline (as in the original guide); ``logger.language: en`` switches.
MESSAGES: Dict[str, Dict[str, str]] = {
    "zh": {
        "train_stats": "训练统计信息:",
        "num_train_images": "训练图像数量",
        "enlarge_ratio": "数据集放大比例",
        "batch_per_gpu": "每GPU批次大小",
        "world_size": "世界大小(GPU数量)",
        "iters_per_epoch": "每轮次所需迭代数",
        "total_epochs_iters": "总轮次: {epochs}; 总迭代数: {iters}.",
        "hdr_config": "HDR训练配置:",
        "batch_size": "批次大小",
        "image_size": "图像尺寸",
        "total_iters": "总迭代数",
        "num_val_images": "验证集 {name} 图像数量: {n}",
        "start_training": "从第 {epoch} 轮, 第 {iter} 次迭代开始训练",
        "resuming": "从训练状态 {path} 恢复: 第 {iter} 次迭代, 第 {epoch} 轮",
        "saving": "保存模型和训练状态 (第 {iter} 次迭代)",
        "end_training": "训练结束. 耗时: {time}",
        "save_latest": "保存最新模型.",
        "val_summary": "验证集 {name} 在第 {iter} 次迭代的结果:",
        "final_compare": "最终质量对比 (验证集 {name}, {metric}): 训练后的模型 {model:.4f} | 网络输入 {base:.4f} | 提升 {gain:+.4f}",
        "device": "训练设备: {device}",
        "cpu_malloc": "CPU 训练: glibc malloc 保留已释放的内存供下一步复用 (大批次时每步快数倍, 内存峰值略高)",
        "nothing_to_train": "无需训练: 训练状态 {path} 已在第 {iter} 次迭代, 而 train:total_iter 为 {total}. 要继续训练, 调大 train:total_iter, 例如 --auto_resume --force_yml train:total_iter={more}.",
        "preempted": "收到 {signal}: 已在第 {iter} 次迭代保存训练状态并停止. 用 --auto_resume 继续.",
        "workers_stopped": "DataLoader 工作进程也收到了同一信号并已结束 (信号发给了整个进程组): 这是预期的, 第 {iter} 次迭代的训练状态已保存.",
        "interrupted": "收到 Ctrl-C (SIGINT): 已在第 {iter} 次迭代保存训练状态和网络 ({path}) 并停止. 继续训练: 同样的命令加 --auto_resume.",
        "interrupt_notice": "收到 Ctrl-C: 当前迭代结束后保存训练状态再停止 (再按一次 Ctrl-C 立即中止, 不保存).",
        "test_device": "测试设备: {device}",
        "test_set": "测试集 {name}: {n} 张图像",
        "test_results": "测试结果 (每个测试集的平均值; input 行 = 网络输入, 即 LDR 的逆色调映射):",
        "test_no_gt": "测试集 {name} 没有真值 (GT): 只保存输出, 不计算指标",
        "test_outputs": "测试集 {name}: {n} 个输出文件已写入 {path}",
        "test_preview": "测试集 {name}: 前 {n} 张图像的预览网格 (输入 | 输出 | 真值 | 误差图) 已写入 {path}",
        "test_written": "结果表已写入 {csv} 和 {json}",
        "progressive_config": "渐进式训练配置 (加载器每批 {batch} 个 {size}x{size} 图像块, 总迭代数 {total}):",
        "progressive_stage_line": "第 {stage} 阶段: 第 {start}-{end} 次迭代, 每GPU批次大小 {batch}, 图像块尺寸 {patch}",
        "progressive_switch": "渐进式训练第 {stage}/{stages} 阶段 (第 {start}-{end} 次迭代): 图像块尺寸更新为 {patch}, 每GPU批次大小更新为 {batch}",
        "progressive_iters_short": "datasets:train:iters 之和 ({sum}) 小于 train:total_iter ({total}): 最后一个阶段 (批次大小 {batch}, 图像块尺寸 {patch}) 持续到第 {total} 次迭代.",
        "progressive_iters_long": "datasets:train:iters 之和 ({sum}) 大于 train:total_iter ({total}): 训练在第 {stage} 阶段的第 {total} 次迭代结束, 之后的 {skipped} 个阶段不会运行.",
    },
    "en": {
        "train_stats": "Training statistics:",
        "num_train_images": "Number of train images",
        "enlarge_ratio": "Dataset enlarge ratio",
        "batch_per_gpu": "Batch size per gpu",
        "world_size": "World size (gpu number)",
        "iters_per_epoch": "Require iter number per epoch",
        "total_epochs_iters": "Total epochs: {epochs}; iters: {iters}.",
        "hdr_config": "HDR training configuration:",
        "batch_size": "Batch size",
        "image_size": "Image size",
        "total_iters": "Total iterations",
        "num_val_images": "Number of val images/folders in {name}: {n}",
        "start_training": "Start training from epoch: {epoch}, iter: {iter}",
        "resuming": "Resuming from training state {path}: iter {iter}, epoch {epoch}",
        "saving": "Saving models and training states (iter {iter}).",
        "end_training": "End of training. Time consumed: {time}",
        "save_latest": "Save the latest model.",
        "val_summary": "Validation {name} at iter {iter}:",
        "final_compare": "Final quality (val set {name}, {metric}): trained model {model:.4f} | network input {base:.4f} | gain {gain:+.4f}",
        "device": "Training device: {device}",
        "cpu_malloc": "CPU training: glibc malloc keeps freed memory for the next step (large steps several times faster, slightly higher peak memory)",
        "nothing_to_train": "Nothing to train: the training state {path} is at iter {iter} and train:total_iter is {total}. To train longer, raise train:total_iter, e.g. --auto_resume --force_yml train:total_iter={more}.",
        "preempted": "{signal} received: training state saved at iter {iter}; stopped. Continue with --auto_resume.",
        "workers_stopped": "The DataLoader worker processes ended by the same signal (it was sent to the whole process group): expected; the training state of iter {iter} is saved.",
        "interrupted": "Ctrl-C (SIGINT) received: training state and network saved at iter {iter} ({path}); stopped. Continue with the same command plus --auto_resume.",
        "interrupt_notice": "Ctrl-C: saving a training state after the current iteration, then stopping (press Ctrl-C again to abort without saving).",
        "test_device": "Test device: {device}",
        "test_set": "Test set {name}: {n} images",
        "test_results": "Test results (mean per set; 'input' rows = the network input, i.e. the inverse tone-mapped LDR):",
        "test_no_gt": "Test set {name} has no ground truth (GT): outputs saved, no metrics",
        "test_outputs": "Test set {name}: {n} output files written to {path}",
        "test_preview": "Test set {name}: preview grid of the first {n} images (input | output | GT | error map) written to {path}",
        "test_written": "Results table written to {csv} and {json}",
        "progressive_config": "Progressive training (the loader delivers batches of {batch} patches of {size}x{size}; total iterations {total}):",
        "progressive_stage_line": "stage {stage}: iterations {start}-{end}, batch size per gpu {batch}, patch size {patch}",
        "progressive_switch": "Progressive training stage {stage}/{stages} (iterations {start}-{end}): updating patch size to {patch} and batch size per gpu to {batch}",
        "progressive_iters_short": "The sum of datasets:train:iters ({sum}) is less than train:total_iter ({total}): the last stage (batch size {batch}, patch size {patch}) continues until iteration {total}.",
        "progressive_iters_long": "The sum of datasets:train:iters ({sum}) exceeds train:total_iter ({total}): training ends at iteration {total} in stage {stage}; the {skipped} later stage(s) never run.",
    },
}


class Messages:
    """Looks up user-facing sentences in the configured language."""

    def __init__(self, language: str = "zh") -> None:
        if language not in MESSAGES:
            raise ValueError(f"logger.language must be one of {sorted(MESSAGES)}, got '{language}'")
        self.language = language

    def __call__(self, key: str, **kwargs: Any) -> str:
        return MESSAGES[self.language][key].format(**kwargs)


class _BufferHandler(logging.Handler):
    """Keeps the records logged before the log file exists, so the file gets the whole story."""

    def __init__(self, capacity: int = 10000) -> None:
        super().__init__()
        self.records: list = []
        self.capacity = capacity

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.capacity:
            self.records.append(record)


class _ConsoleHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr``, not the one of the first run in this process (it may be gone since:
    a test's captured stream, a replaced console)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def get_root_logger(log_level: int = logging.INFO, log_file: Optional[str] = None) -> logging.Logger:
    """The project logger: console on every rank (errors only off rank 0), plus ``log_file`` on rank 0.

    Records logged before ``log_file`` is given are replayed into it when it is.
    """
    global _initialized
    logger = logging.getLogger(LOGGER_NAME)
    rank, _ = get_dist_info()
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s")
    if not _initialized:
        handler = _ConsoleHandler()
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        logger.propagate = False
        _initialized = True
    logger.setLevel(log_level if rank == 0 else logging.ERROR)
    if log_file is None:
        return logger
    buffered = []
    for h in list(logger.handlers):  # one file per run: drop a previous run's file handler and the buffer
        if isinstance(h, (logging.FileHandler, _BufferHandler)):
            if isinstance(h, _BufferHandler):
                buffered = h.records
            logger.removeHandler(h)
            h.close()
    if rank == 0:
        fh = logging.FileHandler(log_file, "w", encoding="utf-8")
        fh.setFormatter(fmt)
        for record in buffered:
            fh.handle(record)
        logger.addHandler(fh)
    return logger


def begin_run_log() -> logging.Logger:
    """Start a run: detach the previous run's log file and buffer records until :func:`get_root_logger` gets one."""
    logger = get_root_logger()
    for h in list(logger.handlers):
        if isinstance(h, (logging.FileHandler, _BufferHandler)):
            logger.removeHandler(h)
            h.close()
    logger.addHandler(_BufferHandler())
    return logger


class MessageLogger:
    """Formats the periodic training line (epoch, iter, lr, losses, time/iter, data time, ETA) and hands the losses
    and learning rates to the run's sinks (``losses/<name>``, ``train/lr``, ``train/lr_<i>``)."""

    def __init__(self, name: str, total_iters: int, start_iter: int = 1, sink: Any = None) -> None:
        self.exp_name = name
        self.max_iters = total_iters
        self.start_iter = start_iter
        self.sink = sink
        self.start_time = time.time()
        self.logger = get_root_logger()

    def reset_start_time(self) -> None:
        self.start_time = time.time()

    @master_only
    def __call__(self, log_vars: Dict[str, Any]) -> None:
        epoch, current_iter = log_vars.pop("epoch"), log_vars.pop("iter")
        lrs = log_vars.pop("lrs")
        msg = f"[{self.exp_name[:12]}..][epoch:{epoch:3d}, iter:{current_iter:8,d}, lr:({', '.join(f'{v:.3e}' for v in lrs)})] "
        if "time" in log_vars:
            iter_time, data_time = log_vars.pop("time"), log_vars.pop("data_time")
            done = max(1, current_iter - self.start_iter + 1)
            avg = (time.time() - self.start_time) / done
            eta = avg * (self.max_iters - current_iter)
            msg += f"[eta: {format_duration(eta)}, time (data): {iter_time:.3f} ({data_time:.3f})] "
        for k, v in log_vars.items():
            msg += f"{k}: {v:.4e} "
        if self.sink is not None:
            figures = {f"losses/{k}": v for k, v in log_vars.items()}
            figures.update({f"train/lr{'' if i == 0 else f'_{i}'}": lr for i, lr in enumerate(lrs)})
            self.sink.scalars(figures, current_iter)
        self.logger.info(msg)


def get_env_info() -> str:
    import torch

    return f"PyTorch: {torch.__version__}, CUDA available: {torch.cuda.is_available()}, started {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"


def dict2str(opt: Dict[str, Any], indent: int = 1) -> str:
    lines = []
    for k, v in opt.items():
        if isinstance(v, dict):
            lines.append(" " * (indent * 2) + f"{k}:")
            lines.append(dict2str(v, indent + 1))
        else:
            lines.append(" " * (indent * 2) + f"{k}: {v}")
    return "\n".join(lines)
