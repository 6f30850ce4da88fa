"""Image quality metrics, looked up by the ``type`` of a ``val.metrics`` entry."""
from typing import Any, Dict

from DiffIR.metrics import psnr_ssim  # noqa: F401  (registers the functions)
from DiffIR.utils.registry import METRIC_REGISTRY, OptionError, check_kwargs


def check_metric_options(metrics: Dict[str, Dict[str, Any]]) -> None:
    """Fail before training on an unknown metric ``type`` or argument."""
    for name, opt in (metrics or {}).items():
        where = f"val:metrics:{name}"
        if not isinstance(opt, dict) or "type" not in opt:
            raise OptionError(f"'{where}' needs a 'type' (one of: {', '.join(METRIC_REGISTRY.keys())})")
        try:
            fn = METRIC_REGISTRY.get(opt["type"])
        except KeyError as e:
            raise OptionError(f"'{where}:type': {e.args[0]}") from None
        check_kwargs(fn, {k: v for k, v in opt.items() if k not in ("type", "better")}, where)


def calculate_metric(data: Dict[str, Any], opt: Dict[str, Any]) -> float:
    """``data`` holds ``img`` and ``img2``; ``opt`` is one ``val.metrics`` entry."""
    kwargs = {k: v for k, v in opt.items() if k not in ("type", "better")}
    return METRIC_REGISTRY.get(opt["type"])(**data, **kwargs)


__all__ = ["calculate_metric", "check_metric_options", "METRIC_REGISTRY"]
