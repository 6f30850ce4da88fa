"""The seam between a paired dataset and where its pairs are stored: :class:`PairSource` (what to read),
:class:`PairReader` (what a reader offers) and :func:`make_pair_reader` (``io_backend: {type: ...}`` looked up in
:data:`~DiffIR.utils.registry.IO_BACKEND_REGISTRY`).

The backends here are ``disk`` (:mod:`DiffIR.data.disk_reader`: three folders) and ``lmdb``
(:mod:`DiffIR.data.lmdb_reader`: the three databases of scripts/create_lmdb_hdr.py). A new backend (a sharded
streaming format, say) is one module ``DiffIR/data/<name>_reader.py`` (the package imports every such module, as
it does the datasets) holding a class registered with ``@IO_BACKEND_REGISTRY.register(name="<type>")`` that

* is built as ``cls(source, **options)``: ``source`` a :class:`PairSource`, ``options`` the other keys of
  ``io_backend``, declared as keyword parameters (that signature is the list of keys users may write: others are
  refused by name before the reader is built);
* pairs what ``source`` names (LQ, GT and, when the pair format has them, dgain entries, by stem with
  ``filename_tmpl`` and ``meta_info_file``: :func:`DiffIR.data.pairing.pair_stems` gives the shared messages) and
  raises :class:`~DiffIR.utils.errors.OptionError` naming the option key when the storage is not there;
* serves the pairs by index (``len``, ``paths``, ``read``) and names its storage (``roots``: the check cache is
  keyed by them);
* runs its part of the check before training (``check``): what it can learn cheaply (sizes from headers, dgain
  entries) at every level, pixels at ``full``, through the shared verdicts of
  :class:`~DiffIR.data.checks.CheckRun`, so that every backend reports problems with the same messages;
* pickles without open handles (DataLoader workers receive a copy and open their own).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

from DiffIR.data.pairing import pair_format_parts, read_meta_info_file
from DiffIR.utils.errors import OptionError
from DiffIR.utils.image_common import WindowArg
from DiffIR.utils.registry import IO_BACKEND_REGISTRY, check_kwargs

if TYPE_CHECKING:
    from DiffIR.data.checks import CheckRun

__all__ = ["PairSource", "PairReader", "PairRecords", "make_pair_reader", "IO_BACKEND_REGISTRY"]


@dataclass(frozen=True)
class PairSource:
    """Where one set of pairs is and how its files pair up: one value instead of the same eight parameters
    handed from the dataset to the reader, the pairing and the LMDB writer.

    ``pair_format`` (a :class:`~DiffIR.data.paired_common.PairFormat`; None: the LDR/HDR/dgain layout) says what a
    pair is made of; ``dataroot_dgain`` is used only when it has dgain entries. ``where`` is the option path shown
    in messages (``datasets:train``); ``io_backend`` the option as written (None: disk).
    """

    dataroot_lq: str
    dataroot_gt: str
    dataroot_dgain: Optional[str] = None
    filename_tmpl: str = "{}"
    where: str = "datasets"
    meta_info_file: Optional[str] = None
    pair_format: Any = None
    io_backend: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in ("dataroot_lq", "dataroot_gt", "dataroot_dgain"):  # a Path reads as the text it shows
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, key, str(value))

    @classmethod
    def from_options(cls, opt: Mapping[str, Any], where: str, pair_format: Any) -> "PairSource":
        """The source a dataset's options name (the dataroots it needs were checked to be there)."""
        return cls(str(opt["dataroot_lq"]), str(opt["dataroot_gt"]),
                   str(opt["dataroot_dgain"]) if pair_format.dgain else None,
                   str(opt.get("filename_tmpl", "{}")), where, opt.get("meta_info_file"), pair_format,
                   opt.get("io_backend") or {"type": "disk"})

    @property
    def has_dgain(self) -> bool:
        return pair_format_parts(self.pair_format)[3]

    @property
    def roots(self) -> Tuple[str, ...]:
        """The dataroots this source uses: LQ, GT and, with dgain entries, dgain."""
        roots = (self.dataroot_lq, self.dataroot_gt, str(self.dataroot_dgain))
        return roots if self.has_dgain else roots[:2]

    @property
    def labels(self) -> Tuple[str, str, str]:
        """The dataroots as pairing messages show them: ``dataroot_gt='/data/hdr'``."""
        return (f"dataroot_lq='{self.dataroot_lq}'", f"dataroot_gt='{self.dataroot_gt}'",
                f"dataroot_dgain='{self.dataroot_dgain}'")

    def meta_info_stems(self) -> Optional[List[str]]:
        """The GT stems the ``meta_info_file`` lists, in its order (None: no file, every pair is used)."""
        return read_meta_info_file(self.meta_info_file, self.where) if self.meta_info_file else None


@runtime_checkable
class PairReader(Protocol):
    """What a dataset and the check before training use of an ``io_backend`` reader (see the module docstring)."""

    #: the ``io_backend`` type, shown in the dataset's repr
    backend: str

    def __len__(self) -> int:
        """How many complete pairs the source holds."""

    def paths(self, index: int) -> Dict[str, str]:
        """The names of pair ``index``'s parts (``lq_path``, ``gt_path``, ``dgain_path``) as messages show them."""

    def read(self, index: int, window: WindowArg = None) -> Dict[str, Any]:
        """Pair ``index``: ``lq``/``gt`` float32 RGB arrays (only ``window`` of them when given; a function of the
        LQ size draws it), its ``paths`` and, with dgain entries, ``dgain``/``gamma``."""

    def roots(self) -> Sequence[str]:
        """The storage the pairs come from (names the check cache)."""

    def check(self, run: "CheckRun") -> None:
        """This backend's part of the check before training: report into ``run`` what is wrong with its pairs."""


class PairRecords:
    """The indexing both built-in readers share: ``records[i]`` names pair ``i``'s parts."""

    records: List[Dict[str, str]]

    def __len__(self) -> int:
        return len(self.records)

    def paths(self, index: int) -> Dict[str, str]:
        return dict(self.records[index])


def _options(reader: Any) -> List[str]:
    """The ``io_backend`` keys a reader takes: the keyword parameters after its ``source``."""
    params = list(inspect.signature(reader).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_pair_reader(source: PairSource) -> PairReader:
    """The reader of ``source.io_backend`` (a mapping with ``type``; None means disk) over ``source``.

    The type is looked up in :data:`IO_BACKEND_REGISTRY` (an unknown one is named with the closest known type),
    the other keys are checked against the reader's signature before it is built.
    """
    where = source.where
    io_backend = source.io_backend
    if io_backend is not None and not isinstance(io_backend, Mapping):
        raise OptionError(f"'{where}:io_backend' must be a mapping like {{type: disk}}, got {io_backend!r}.")
    options = dict(io_backend or {"type": "disk"})
    name = options.pop("type", "disk")
    reader = IO_BACKEND_REGISTRY.get(name, f"{where}:io_backend:type")
    accepted = _options(reader)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        fix = f"accepted: type, {', '.join(accepted)}" if accepted else f"io_backend: {{type: {name}}}"
        raise OptionError(f"'{where}:io_backend' has keys {unknown} that the {name} backend does not use. "
                          f"Fix: remove them ({fix}).")
    check_kwargs(reader, options, f"{where}:io_backend")  # text given for a number
    return reader(source, **options)
