"""The reader seam: PairSource, the PairReader protocol, the io_backend registry and a backend's own check."""
import numpy as np
import pytest

from DiffIR.data import build_dataset
from DiffIR.data.disk_reader import DiskPairReader
from DiffIR.data.lmdb_reader import LmdbPairReader
from DiffIR.data.pair_reader import PairReader, PairSource, make_pair_reader
from DiffIR.data.paired_common import LDR_PAIRS
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import IO_BACKEND_REGISTRY

from helpers import build_lmdb, folder_set_options, make_hdr_folder


def test_io_backend_types_are_registered_readers_of_the_protocol(tmp_path):
    assert IO_BACKEND_REGISTRY.keys() == ["disk", "lmdb"]
    assert IO_BACKEND_REGISTRY.get("disk") is DiskPairReader and IO_BACKEND_REGISTRY.get("lmdb") is LmdbPairReader
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b"))
    build_lmdb(root, tmp_path / "out")
    disk = build_dataset(folder_set_options(root, check="off")).reader
    lmdb = build_dataset(folder_set_options(root, check="off", io_backend={"type": "lmdb"},
                                            **{f"dataroot_{r}": str(tmp_path / "out" / f"{r}.lmdb")
                                               for r in ("lq", "gt", "dgain")})).reader
    for reader in (disk, lmdb):
        assert isinstance(reader, PairReader) and len(reader) == 2
    assert [disk.paths(i)["gt_path"].rsplit("/", 1)[1] for i in range(2)] == ["a.exr", "b.exr"]
    np.testing.assert_allclose(disk.read(1)["gt"], lmdb.read(1)["gt"], rtol=1e-6)


def test_pair_source_names_what_a_reader_reads():
    src = PairSource("/d/lq", "/d/gt", "/d/dg", where="datasets:val")
    assert src.roots == ("/d/lq", "/d/gt", "/d/dg") and src.has_dgain and src.meta_info_stems() is None
    assert src.labels == ("dataroot_lq='/d/lq'", "dataroot_gt='/d/gt'", "dataroot_dgain='/d/dg'")
    two = PairSource.from_options({"dataroot_lq": "/b", "dataroot_gt": "/s", "dataroot_dgain": "/x"}, "w", LDR_PAIRS)
    assert two.roots == ("/b", "/s") and two.dataroot_dgain is None and two.io_backend == {"type": "disk"}


@pytest.mark.parametrize("backend, message", [
    ({"type": "disk", "allow_pickle": True},
     "'datasets:val:io_backend' has keys ['allow_pickle'] that the disk backend does not use. "
     "Fix: remove them (io_backend: {type: disk})."),
    ({"type": "lmdb", "allow_pikle": True, "db": 1},
     "'datasets:val:io_backend' has keys ['allow_pikle', 'db'] that the lmdb backend does not use. "
     "Fix: remove them (accepted: type, allow_pickle)."),
    ({"type": "dsik"},
     "'datasets:val:io_backend:type' = 'dsik' is not a known io_backend type (did you mean 'disk'?). "
     "Fix: use one of: disk, lmdb."),
    ("disk", "'datasets:val:io_backend' must be a mapping like {type: disk}, got 'disk'."),
])
def test_io_backend_options_are_checked_before_a_reader_is_built(backend, message):
    with pytest.raises(OptionError) as ei:
        make_pair_reader(PairSource("/nowhere/lq", "/nowhere/gt", "/nowhere/dg", where="datasets:val",
                                    io_backend=backend))
    assert str(ei.value) == message


class _MemoryReader:
    """A backend of the kind a new storage would add: pairs held in memory, with its own check."""

    backend = "memory"

    def __init__(self, source: PairSource, pairs: int = 2) -> None:
        self.n, self.names = int(pairs), source.roots

    def __len__(self) -> int:
        return self.n

    def paths(self, index):
        return {"lq_path": f"lq/{index}", "gt_path": f"gt/{index}", "dgain_path": f"dg/{index}"}

    def read(self, index, window=None):
        img = np.full((8, 8, 3), 0.5, np.float32)
        return {**self.paths(index), "lq": img, "gt": img, "dgain": 1.0, "gamma": 2.2}

    def roots(self):
        return list(self.names)

    def check(self, run):
        for i in range(self.n):
            run.sizes_ok(self.paths(i)["lq_path"], (8, 8), self.paths(i)["gt_path"], (8, 8 + i))


def test_a_new_backend_is_a_registered_reader_with_its_check(tmp_path, monkeypatch):
    monkeypatch.setitem(IO_BACKEND_REGISTRY._obj_map, "memory", _MemoryReader)
    opt = folder_set_options(tmp_path, io_backend={"type": "memory", "pairs": 1}, check_cache_dir=str(tmp_path / "cc"))
    ds = build_dataset(opt)
    assert len(ds) == 1 and ds[0]["lq"].shape == (3, 8, 8) and "backend='memory'" in repr(ds)
    with pytest.raises(OptionError, match=r"'datasets:val:io_backend:pairs' is 'two', not a number"):
        build_dataset({**opt, "io_backend": {"type": "memory", "pairs": "two"}})
    with pytest.raises(ValueError, match="gt/1"):  # the backend's check reports through the shared verdicts
        build_dataset({**opt, "io_backend": {"type": "memory", "pairs": 2}})
