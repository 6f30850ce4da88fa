"""Image quality metrics, looked up by the ``type`` of a ``val.metrics`` entry.

Each metric declares the images it scores (``metric_domain``): ``network`` metrics (PSNR/SSIM, BasicSR
semantics) take the 8-bit rendering of the network's tone-mapped domain; ``linear`` metrics (PU21, PSNR-μ,
PSNR-L) take linear HDR in the ground-truth files' units.
"""
import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional

from DiffIR.metrics import hdr_metrics, psnr_ssim  # noqa: F401  (registers the functions)
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import METRIC_REGISTRY, check_kwargs


def check_metric_options(metrics: Dict[str, Dict[str, Any]]) -> None:
    """Fail before training on an unknown metric ``type`` or argument."""
    for name, opt in (metrics or {}).items():
        where = f"val:metrics:{name}"
        fn = METRIC_REGISTRY.get_type(opt, where)
        check_kwargs(fn, {k: v for k, v in opt.items() if k not in ("type", "better")}, where)
        for key, valid in (getattr(fn, "option_choices", None) or {}).items():
            if key in opt and opt[key] not in valid:
                raise OptionError(f"'{where}:{key}' is {opt[key]!r}; use one of: {', '.join(map(str, valid))}")
        if opt.get("better", "higher") not in ("higher", "lower"):
            raise OptionError(f"'{where}:better' must be 'higher' or 'lower', got {opt['better']!r}")


def improves(value: float, best: Optional[float], opt: Mapping[str, Any]) -> bool:
    """True when ``value`` beats ``best`` (None: no score yet) in the direction of the metric entry's ``better``
    (``higher``, the default, or ``lower``); a NaN score never does."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if opt.get("better", "higher") == "higher" else value < best


def metric_domain(metric_type: str) -> str:
    """``'linear'`` for metrics on linear HDR, ``'network'`` for metrics on the network's 8-bit domain."""
    return getattr(METRIC_REGISTRY.get(metric_type), "input_domain", "network")


def build_metric(opt: Dict[str, Any], where: str = "val:metrics") -> Callable[..., float]:
    """A ``val.metrics`` entry as a callable ``metric(img, img2) -> float``, checked like every component."""
    check_metric_options({where.split(":")[-1]: opt})
    kwargs = {k: v for k, v in opt.items() if k not in ("type", "better")}
    return functools.partial(METRIC_REGISTRY.get(opt["type"]), **kwargs)


def calculate_metric(data: Dict[str, Any], opt: Dict[str, Any]) -> float:
    """``data`` holds ``img`` and ``img2``; ``opt`` is one ``val.metrics`` entry."""
    kwargs = {k: v for k, v in opt.items() if k not in ("type", "better")}
    return METRIC_REGISTRY.get(opt["type"])(**data, **kwargs)


__all__ = ["build_metric", "calculate_metric", "check_metric_options", "improves", "metric_domain", "METRIC_REGISTRY"]
