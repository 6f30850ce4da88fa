"""Name → class registries, so YAML ``type:`` fields pick implementations, and the one look-up by name."""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, TypeVar

from DiffIR.utils.errors import OptionError, did_you_mean

T = TypeVar("T")


class UnknownNameError(OptionError, KeyError):
    """A name that is not in a registry or table: an :class:`OptionError` for people (the entry scripts print it
    and exit 2), and a ``KeyError`` for code that looks names up like a mapping."""

    __str__ = BaseException.__str__  # KeyError would quote the message


def lookup(table: Mapping[str, T], name: Any, what: str, where: Optional[str] = None) -> T:
    """``table[name]``, or an :class:`UnknownNameError` naming the option key ``where``, the closest known name and
    every known name."""
    known = sorted(table)
    if name not in known:  # a list membership test: a YAML value may be unhashable
        subject = f"'{where}' = '{name}'" if where else f"'{name}'"
        raise UnknownNameError(f"{subject} is not a known {what}{did_you_mean(name, known)}. "
                               f"Fix: use one of: {', '.join(known)}.")
    return table[name]


class Registry:
    """A named table of classes/functions filled by ``@REGISTRY.register()``; unknown names fail by :func:`lookup`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, Any] = {}

    def register(self, obj: Any = None, name: Optional[str] = None) -> Any:
        def deco(o: Any) -> Any:
            key = name or o.__name__
            if key in self._obj_map and self._obj_map[key] is not o:
                raise KeyError(f"'{key}' is already registered in the {self._name} registry")
            self._obj_map[key] = o
            return o

        return deco(obj) if obj is not None else deco

    def get(self, name: str, where: Optional[str] = None) -> Any:
        """The entry registered as ``name``; ``where`` is the option key named when it is unknown."""
        return lookup(self._obj_map, name, self._name, where)

    def get_type(self, opt: Any, where: str) -> Any:
        """The entry named by ``opt['type']`` of the option section ``where`` (an :class:`OptionError` without one)."""
        if not isinstance(opt, Mapping) or "type" not in opt:
            raise OptionError(f"'{where}' needs a 'type' key naming one of: {', '.join(self.keys())}")
        return self.get(opt["type"], f"{where}:type")

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return iter(sorted(self._obj_map.items()))

    def keys(self):
        return sorted(self._obj_map)


ARCH_REGISTRY = Registry("arch")
DATASET_REGISTRY = Registry("dataset")
MODEL_REGISTRY = Registry("model")
LOSS_REGISTRY = Registry("loss")
METRIC_REGISTRY = Registry("metric")
#: ``io_backend: {type: ...}`` of a paired dataset -> its reader class (:mod:`DiffIR.data.pair_reader`)
IO_BACKEND_REGISTRY = Registry("io_backend type")


def check_keys(keys: Iterable[str], accepted: Sequence[str], where: str, what: str) -> None:
    """Raise :class:`OptionError` naming each of ``keys`` not in ``accepted`` (with the closest valid key)."""
    unknown = [k for k in keys if k not in accepted]
    if unknown:
        msgs = [f"'{where}:{k}'{did_you_mean(k, accepted)}" for k in unknown]
        raise OptionError(
            f"Unknown option key {', '.join(msgs)} for {what}. "
            f"Accepted keys: {', '.join(accepted)}. Fix or remove the key in your YAML file."
        )


_NUMERIC_ANNOTATION = re.compile(r"(?:Optional\[)?(?:(?:Sequence|List|Iterable|Tuple)\[)?(?:int|float)\b")


def _expects_number(param: inspect.Parameter) -> bool:
    """True when the parameter is a number or a list of numbers (by its annotation or its default)."""
    annotation = param.annotation
    if isinstance(annotation, str) and _NUMERIC_ANNOTATION.match(annotation):
        return True
    if annotation in (int, float):
        return True
    default = param.default
    if isinstance(default, (tuple, list)) and default:
        return all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default)
    return isinstance(default, (int, float)) and not isinstance(default, bool)


def check_kwargs(target: Callable, kwargs: Dict[str, Any], where: str, ignore: Tuple[str, ...] = ()) -> None:
    """Raise :class:`OptionError` naming each key of ``kwargs`` that ``target`` does not accept, then each text
    value (``lr: abc``) given for a parameter that takes a number or a list of numbers.

    Numeric text such as ``5e-4`` was already turned into a number by the option parser.
    """
    params = inspect.signature(target).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
        check_keys([k for k in kwargs if k not in ignore], accepted, where, getattr(target, "__name__", str(target)))
    bad = []
    for key, value in kwargs.items():
        if key in ignore or key not in params or not _expects_number(params[key]):
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) for v in items):
            bad.append(f"'{where}:{key}' is {value!r}, not {'a list of numbers' if items is value else 'a number'}")
    if bad:
        raise OptionError("; ".join(bad) + ". Fix: write numbers (e.g. 2e-4 or 0.0002) without quotes.")


def build_from_registry(registry: Registry, opt: Dict[str, Any], where: str, **extra: Any) -> Any:
    """Instantiate ``registry[opt['type']](**rest_of_opt, **extra)`` after checking every key.

    ``where`` is the option path used in messages (e.g. ``network_g``).
    """
    cls = registry.get_type(opt, where)
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    check_kwargs(cls, kwargs, where)
    return cls(**kwargs, **extra)
