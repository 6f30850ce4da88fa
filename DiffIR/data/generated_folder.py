"""Crash-safe "generate on first use" of a set of sibling folders (the synthetic data sets of
:mod:`DiffIR.data.synthetic_hdr` and :mod:`DiffIR.data.synthetic_deblur`): :func:`ensure_generated_folders`.

Files are generated into hidden ``.<name>.partial-<id>`` folders next to the targets, each target gets a
``.synthetic_complete.json`` marker carrying a generation id, the configuration and the names and sizes of the
files it wrote, and the files are then moved into place (a missing folder is renamed into place). A set counts as
complete only when all its folders carry markers with the same id and configuration; otherwise (missing/empty
folders, interrupted run, changed configuration) it is regenerated, replacing only the files its markers list. A
folder that also holds files the generator did not write (or that changed since) is refused with their names,
never cleaned; folders with files but no marker are treated as user data and never touched. Concurrent processes
(DDP ranks, two runs) wait on one lock file, so one of them generates.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from DiffIR.utils.errors import OptionError
from DiffIR.utils.file_lock import file_lock

PathLike = Union[str, os.PathLike]

MARKER_NAME = ".synthetic_complete.json"

__all__ = ["MARKER_NAME", "ensure_generated_folders"]


def _folder_state(d: Path) -> Tuple[str, Optional[Dict[str, Any]]]:
    """'missing' | 'empty' (no visible entries) | 'ours' (has a marker) | 'user' (files, no marker)."""
    if not d.exists():
        return "missing", None
    if not d.is_dir():
        raise NotADirectoryError(f"'{d}' exists but is not a folder. Fix: remove it or choose another dataroot.")
    marker = d / MARKER_NAME
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            data = {}
        return "ours", data if isinstance(data, dict) else {}
    if any(not e.name.startswith(".") for e in d.iterdir()):
        return "user", None
    return "empty", None


def _listed_files(marker: Optional[Mapping[str, Any]]) -> Optional[Dict[str, List[int]]]:
    """``name -> accepted sizes`` of the files a marker says the generator wrote; None for a marker of an
    older version (no list)."""
    files = (marker or {}).get("files")
    if not isinstance(files, Mapping):
        return None
    return {str(n): [int(v) for v in (sz if isinstance(sz, list) else [sz])] for n, sz in files.items()}


def _owned_files(folder: Path, marker: Optional[Mapping[str, Any]],
                 legacy_names: Optional[Callable[[Mapping[str, Any]], Sequence[str]]]) -> Tuple[List[str], List[str]]:
    """``(files the generator wrote, visible entries it did not write)`` of a marked folder.

    A file counts as written by the generator when its marker lists it with the same size (a marker of
    an older version lists nothing: then the names its configuration produces, via ``legacy_names``).
    Hidden entries (``.gitkeep``, ...) are neither: no dataset reads them and they are left in place.
    """
    listed = _listed_files(marker)
    if listed is None:
        cfg = (marker or {}).get("config")
        names = set(legacy_names(cfg)) if legacy_names is not None and isinstance(cfg, Mapping) else set()
    owned: List[str] = []
    foreign: List[str] = []
    for e in sorted(folder.iterdir(), key=lambda p: p.name):
        if e.name == MARKER_NAME or e.name.startswith("."):
            continue
        is_file = e.is_file() and not e.is_symlink()
        if listed is None:
            ok = is_file and e.name in names
        else:
            ok = is_file and e.name in listed and e.stat().st_size in listed[e.name]
        if ok:
            owned.append(e.name)
        elif is_file and listed is not None and e.name in listed:
            foreign.append(f"{e.name} (changed since it was generated)")
        else:
            foreign.append(e.name + ("/" if e.is_dir() else ""))
    return owned, foreign


def _write_marker(folder: Path, data: Mapping[str, Any]) -> None:
    """The marker, written to a hidden temporary name and renamed (never half-written)."""
    tmp = folder / f"{MARKER_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, folder / MARKER_NAME)


def _remove_partial(p: Path) -> None:
    """Remove a hidden ``.<name>.partial-<id>`` folder: the generator alone writes there (nothing else is moved in)."""
    shutil.rmtree(p, ignore_errors=True)


def _replace_in_place(target: Path, tmp: Path, old_marker: Optional[Mapping[str, Any]], old_owned: Sequence[str],
                      marker: Dict[str, Any]) -> None:
    """Swap the generator's files in ``target`` for those in ``tmp``; touch nothing else in ``target``.

    First the marker lists old and new files (so a crash midway leaves a folder still marked as the
    generator's, with every file it may hold listed, which the next run regenerates), then the old
    files go, the new ones are moved in, and the final marker is written.
    """
    new_files = marker["files"]
    old_listed = _listed_files(old_marker) or {}
    both: Dict[str, List[int]] = {}
    for name in old_owned:
        both[name] = sorted(set(old_listed.get(name, [])) | {(target / name).stat().st_size})
    for name, size in new_files.items():
        both[name] = sorted(set(both.get(name, [])) | {int(size)})
    _write_marker(target, {"generation_id": None, "config": None, "replacing": True, "files": both})
    for name in old_owned:
        if name not in new_files:
            (target / name).unlink()
    for name in new_files:
        os.replace(tmp / name, target / name)
    _write_marker(target, marker)


def ensure_generated_folders(
    targets: Sequence[PathLike],
    labels: Sequence[str],
    config: Dict[str, Any],
    generate: Callable[[List[Path]], None],
    description: str,
    log: Optional[Callable[[str], None]] = print,
    lock_index: int = 0,
    legacy_names: Optional[Callable[[Mapping[str, Any], int], Sequence[str]]] = None,
) -> bool:
    """Crash-safe "generate on first use" of a set of sibling folders (any generator, see the module docstring).

    ``generate(tmp_folders)`` writes the data into hidden temporary folders (one per target, same
    order). A missing target is created by renaming its temporary folder; an existing one (empty, or
    holding an earlier generation) gets the new files moved in and only the files the earlier
    generation wrote removed: each folder's marker lists its files with their sizes, and nothing it
    does not list is ever deleted. Returns True if data was generated, False if the folders were
    already usable (a complete set with the same ``config``, or user data in all folders).

    Raises ``FileExistsError`` naming the files when a folder to regenerate holds files the generator
    did not write (or that changed since), and when some folders hold user data and others would have
    to be generated. ``labels`` name the folders in messages; the lock file sits next to
    ``targets[lock_index]``; ``legacy_names(old_config, index)`` gives the file names an older marker
    (without a file list) stands for.
    """
    targets = [Path(t) for t in targets]
    if len({os.path.abspath(t) for t in targets}) != len(targets):
        raise OptionError(
            f"synthetic generation needs {len(targets)} different folders for {', '.join(labels)}; got "
            f"{', '.join(str(t) for t in targets)}"
        )
    if _usable(targets, labels, config):
        return False
    anchor = targets[lock_index]
    with file_lock(anchor.parent / f".{anchor.name}.synthetic.lock"):
        if _usable(targets, labels, config):  # another process finished while we waited
            return False
        old = _generated_files(targets, labels, legacy_names)  # refuse before generating anything
        for t in targets:  # leftovers of an interrupted run (we hold the lock, so none is in progress)
            if t.parent.is_dir():
                for e in t.parent.glob(f".{t.name}.partial-*"):
                    _remove_partial(e)
        if log is not None:
            log(f"Generating {description} into " + ", ".join(f"{lab}={t}" for lab, t in zip(labels, targets)))
        _generate_and_install(targets, config, generate, old)
    if not _usable(targets, labels, config):  # pragma: no cover - defensive
        raise RuntimeError(f"synthetic data generation into {targets} did not complete")
    if log is not None:
        log(f"{description[:1].upper()}{description[1:]} is ready.")
    return True


def _usable(targets: Sequence[Path], labels: Sequence[str], config: Mapping[str, Any]) -> bool:
    """True for a complete generation with ``config`` or user data in every folder; refuses a mix of user
    data and folders that would need generating."""
    states = [_folder_state(t) for t in targets]
    kinds = [s for s, _ in states]
    if all(k == "user" for k in kinds):
        return True
    if all(k == "ours" for k in kinds):
        ids = {(m or {}).get("generation_id") for _, m in states}
        cfgs = [(m or {}).get("config") for _, m in states]
        if len(ids) == 1 and None not in ids and all(c == config for c in cfgs):
            return True
    users = [f"{lab}={t}" for lab, t, k in zip(labels, targets, kinds) if k == "user"]
    if users:
        others = [f"{lab}={t} ({k})" for lab, t, k in zip(labels, targets, kinds) if k != "user"]
        raise FileExistsError(
            f"Cannot generate the synthetic data set: {', '.join(users)} already hold files that the "
            f"generator did not make, while {', '.join(others)} would need generating. Fix: point all "
            f"dataroots at empty/new folders, or remove the 'synthetic' option to use your own data."
        )
    return False


def _generated_files(targets: Sequence[Path], labels: Sequence[str],
                     legacy_names: Optional[Callable[[Mapping[str, Any], int], Sequence[str]]],
                     ) -> List[Tuple[Optional[Dict[str, Any]], List[str]]]:
    """Per target: (its marker, the files the generator wrote there); refuses folders with foreign files."""
    out: List[Tuple[Optional[Dict[str, Any]], List[str]]] = []
    problems = []
    for i, (lab, t) in enumerate(zip(labels, targets)):
        kind, marker = _folder_state(t)
        if kind != "ours":
            out.append((None, []))
            continue
        names = (lambda cfg, i=i: legacy_names(cfg, i)) if legacy_names is not None else None
        owned, foreign = _owned_files(t, marker, names)
        if foreign:
            more = f", ... (+{len(foreign) - 10} more)" if len(foreign) > 10 else ""
            problems.append(f"{lab}={t}: {', '.join(foreign[:10])}{more}")
        out.append((marker, owned))
    if problems:
        raise FileExistsError(
            "Cannot regenerate the synthetic data set (its 'synthetic:' options changed, or an earlier "
            "generation was interrupted): these folders hold files the generator did not write, which it "
            "will not delete or mix with generated data:\n  " + "\n  ".join(problems)
            + "\nFix: move those files elsewhere, or choose other dataroots for the synthetic set "
              "(or restore the previous 'synthetic:' options)."
        )
    return out


def _generate_and_install(targets: Sequence[Path], config: Mapping[str, Any], generate: Callable[[List[Path]], None],
                          old: Sequence[Tuple[Optional[Mapping[str, Any]], Sequence[str]]]) -> None:
    """Generate into hidden temporary folders, then rename each into place (or move its files into the
    existing folder, replacing only what the earlier generation ``old`` wrote); never leaves a partial folder."""
    gid = uuid.uuid4().hex[:12]
    tmps = [t.parent / f".{t.name}.partial-{gid}" for t in targets]
    try:
        generate(tmps)
        for t, tmp, (old_marker, old_owned) in zip(targets, tmps, old):
            files = {e.name: e.stat().st_size for e in sorted(tmp.iterdir(), key=lambda p: p.name) if e.is_file()}
            marker = {"generation_id": gid, "config": config, "files": files}
            if _folder_state(t)[0] == "missing":
                _write_marker(tmp, marker)
                os.rename(tmp, t)
            else:
                _replace_in_place(t, tmp, old_marker, old_owned, marker)
    finally:
        for p in tmps:
            if p.exists():
                _remove_partial(p)
