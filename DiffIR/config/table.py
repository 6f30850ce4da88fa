"""The option table: one row per YAML key, declared as a field of a frozen section dataclass.

A row holds what the key may be (type and range), its default — applied when the key is missing or ``~`` — an
example for the fix and a line of help. Everything else is generated from the rows: the key set of a section
(unknown keys are refused with a did-you-mean), the value check with its messages, and the typed, frozen section
object a consumer reads (``options.train.speed.accum_iter``), so that a new option is one row plus its one read::

    @dataclass(frozen=True)
    class ValOptions(Section):
        pbar: bool = option(True, bool, help="a progress bar per validation")

A field declared with :func:`group` is a nested section built from the *same* YAML mapping (the flat keys of
``train`` hold the speed options and the stage-2 recipe; ``val`` holds the tiling). A row of ``kind=None`` takes any
YAML value: a component mapping (``optim_g``, ``scheduler``, ``metrics``) checked by its builder against the
component's signature, or a value with a check of its own.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from DiffIR.utils.errors import OptionError
from DiffIR.utils.numbers import as_number, parse_number

__all__ = ["Value", "option", "group", "Section", "frozen", "raise_all"]

S = TypeVar("S", bound="Section")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Value:
    """What one option key holds: ``kind`` (int, float, bool, str; None: any value) and its allowed range.

    ``lo``/``hi`` are inclusive bounds, ``above``/``below`` exclusive ones; ``multiple`` asks for a multiple;
    ``choices`` lists the allowed strings. ``~`` (None) means "the default" (``default``, what the program uses
    then) unless ``nullable`` is false, for a key whose reader has no use for ``~``. A flag takes 0/1 as
    false/true unless ``exact``; a text of ``choices`` is matched in lower case with ``casefold`` (``amp: BF16``).
    ``example`` is shown in the fix, ``help`` says what the key does. ``convert(value, key) -> (value, error)``
    checks a value no kind expresses (``false | true | N``); the kind is then None.
    """

    kind: Optional[type]
    lo: Optional[float] = None
    hi: Optional[float] = None
    above: Optional[float] = None
    below: Optional[float] = None
    multiple: Optional[int] = None
    choices: Tuple[str, ...] = ()
    default: Any = None
    example: str = ""
    nullable: bool = True
    exact: bool = False
    casefold: bool = False
    convert: Optional[Callable[[Any, str], Tuple[Any, Optional[str]]]] = None
    help: str = ""

    def describe(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 1`` or ``a number in [0, 1)``."""
        if self.kind is None:
            return "a value"
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices) if self.choices else "a text"
        what = "an integer" if self.kind is int else "a number"
        if self.multiple:
            what = f"a multiple of {self.multiple}"
        low = (f"[{_fmt(self.lo)}" if self.lo is not None else f"({_fmt(self.above)}" if self.above is not None else None)
        high = (f"{_fmt(self.hi)}]" if self.hi is not None else f"{_fmt(self.below)})" if self.below is not None else None)
        if low and high:
            return f"{what} in {low}, {high}"
        if low:
            return f"{what} {'>=' if self.lo is not None else '>'} {low[1:]}"
        if high:
            return f"{what} {'<=' if self.hi is not None else '<'} {high[:-1]}"
        return what

    def check(self, value: Any, key: str) -> Tuple[Any, Optional[str]]:
        """``(value as the program uses it, error or None)``; numeric text becomes a number."""
        if self.kind is None:
            return (value, None) if self.convert is None or value is None else self.convert(value, key)
        fix = f" Fix: use {self.describe()}" + (f", e.g. {self.example}." if self.example else ".")
        if value is None:
            return None, (None if self.nullable else f"'{key}' is ~ (empty).{fix}")
        if self.kind is bool:
            if isinstance(value, bool):
                return value, None
            if isinstance(value, int) and value in (0, 1) and not self.exact:
                return bool(value), None
            quoted = " (without quotes)" if isinstance(value, str) else ""
            return value, f"'{key}' is {value!r}, not true or false. Fix: write true or false{quoted}."
        if self.kind is str:
            if isinstance(value, str) and self.casefold:
                value = value.lower()
            if isinstance(value, str) and (not self.choices or value in self.choices):
                return value, None
            return value, f"'{key}' is {value!r}.{fix}"
        number = parse_number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            return value, f"'{key}' is {value!r}, not a number.{fix}"
        if self.kind is int:
            if number != int(number):
                return value, f"'{key}' is {value!r}, not a whole number.{fix}"
            number = int(number)
        elif isinstance(value, str):
            number = as_number(number)
        if ((self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi)
                or (self.above is not None and number <= self.above) or (self.below is not None and number >= self.below)
                or (self.multiple and number % self.multiple)):
            return number, f"'{key}' is {value!r}.{fix}"
        return number, None


def option(default: Any = None, kind: Optional[type] = None, **spec: Any) -> Any:
    """A row: the dataclass field of one YAML key (``spec``: the :class:`Value` bounds, ``example``, ``help``)."""
    value = Value(kind, default=default, **spec)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: frozen(default), metadata={"value": value})
    return dataclasses.field(default=default, metadata={"value": value})


def group(section: Type["Section"]) -> Any:
    """A nested section read from the same YAML mapping as the section that holds it."""
    return dataclasses.field(default_factory=section, metadata={"group": section})


def frozen(value: Any) -> Any:
    """A read-only copy of a YAML value (mappings become read-only views, lists tuples), so that no consumer
    changes what another one reads."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return copy.copy(value)


def raise_all(errors: List[str]) -> None:
    """Raise one :class:`OptionError` holding every message of ``errors`` (nothing when it is empty)."""
    if len(errors) == 1:
        raise OptionError(errors[0])
    if errors:
        raise OptionError("Invalid options:\n  - " + "\n  - ".join(errors))


class Section:
    """Base of the frozen option sections: their rows, the key check and the building, from the fields."""

    @classmethod
    def rows(cls) -> Dict[str, Value]:
        """Every YAML key of the section (those of its groups too) and its row."""
        rows: Dict[str, Value] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "group" in f.metadata:
                rows.update(f.metadata["group"].rows())
            elif "value" in f.metadata:
                rows[f.name] = f.metadata["value"]
        return rows

    @classmethod
    def check(cls, mapping: Any, where: str) -> List[str]:
        """The value errors of the keys present in ``mapping`` (converted in place: ``'5e-4'`` → 5e-4)."""
        if not isinstance(mapping, dict):
            return []
        errors = []
        for key, row in cls.rows().items():
            if key in mapping:
                mapping[key], error = row.check(mapping[key], f"{where}{key}")
                if error:
                    errors.append(error)
        return errors

    @classmethod
    def parse(cls: Type[S], mapping: Optional[Mapping[str, Any]], where: str) -> Tuple[S, List[str]]:
        """The section of ``mapping`` (every missing or ``~`` key at its default) and the value errors (the keys
        with an error keep their default in the section, which is not for use then)."""
        mapping = mapping if isinstance(mapping, Mapping) else {}
        values: Dict[str, Any] = {}
        errors: List[str] = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "group" in f.metadata:
                values[f.name], more = f.metadata["group"].parse(mapping, where)
                errors += more
            elif "value" in f.metadata and mapping.get(f.name) is not None:
                value, error = f.metadata["value"].check(mapping[f.name], f"{where}{f.name}")
                if error:
                    errors.append(error)
                elif value is not None:
                    values[f.name] = frozen(value)
        return cls(**values), errors

    @classmethod
    def build(cls: Type[S], mapping: Optional[Mapping[str, Any]], where: str = "") -> S:
        """:meth:`parse`, raising one :class:`OptionError` with every error."""
        section, errors = cls.parse(mapping, where)
        raise_all(errors)
        return section

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (a command-line flag over the file's value)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
