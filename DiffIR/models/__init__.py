"""Training models. ``build_model(opt)`` picks the class named by ``model_type``."""
from typing import Any, Dict, Optional

from DiffIR.config.sections import RunOptions
from DiffIR.models import diffir_s1_model  # noqa: F401  (registers the classes)
from DiffIR.models import diffir_s2_model  # noqa: F401  (registers the classes)
from DiffIR.utils.registry import MODEL_REGISTRY


def build_model(opt: Dict[str, Any], options: Optional[RunOptions] = None):
    """The model of ``opt`` (``options``: its sections, when the caller built them already)."""
    cls = MODEL_REGISTRY.get(opt.get("model_type"), "model_type")
    model = cls(opt, options)
    model.logger.info(f"Model [{cls.__name__}] is created.")
    return model


__all__ = ["build_model", "MODEL_REGISTRY"]
