"""Folders agfsync writes, and the rule that keeps a user's files safe.

agfsync only ever replaces or deletes what it wrote itself. Every folder it writes
(a dataset, a publish dry run, a report, an evaluation, a training run) carries a
marker file, `.agfsync-owned.json`, listing the kind of folder and the paths agfsync
put there. Before any work starts, an output folder must be:

- new, or empty; or
- a folder of the same kind written by agfsync, holding nothing but what its marker
  lists (and other agfsync folders nested in it, such as `report/` in a dataset);
- with `--overwrite`: any other folder, whose files agfsync keeps; agfsync then writes
  its own files beside them and refuses when one of the names it writes is taken.

Anything else stops the command with a one-line message naming the folder. Folders
written in one go (`write_folder`) are staged beside the target under a hidden name
of our own and moved into place once complete; folders that fill up as a command
runs (evaluation, training) are claimed first (`claim_folder`) and record what they
add.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agfsync.atomic import write_atomically
from agfsync.errors import ConfigurationError
from agfsync.run.processes import is_alive

MARKER = ".agfsync-owned.json"
"""The file that says a folder (and which of its paths) was written by agfsync."""
STAGING_SUFFIX = ".agfsync-partial"
STAGING = "staging"


class FolderKind:
    """What an owned folder holds; one kind never replaces another."""

    DATASET = "dataset"
    PUBLICATION = "publication"
    REPORT = "report"
    EVALUATION = "evaluation"
    TRAINING = "training"
    CALIBRATION = "calibration"


@dataclass
class Ownership:
    """The marker's content: the folder's kind and the paths agfsync wrote there. An
    entry ending in "/" covers everything under that folder."""

    kind: str
    entries: list[str] = field(default_factory=list)
    pid: int | None = None
    """The process writing a staging folder (which is abandoned once it is gone)."""

    def covers(self, relative: str) -> bool:
        return any(matches(relative, entry) for entry in self.entries)

    def save(self, folder: Path) -> None:
        record: dict[str, object] = {
            "written_by": "agfsync",
            "kind": self.kind,
            "entries": sorted(self.entries),
        }
        if self.pid is not None:
            record["pid"] = self.pid
        text = json.dumps(record, indent=1) + "\n"
        write_atomically(folder / MARKER, lambda partial: partial.write_text(text))

    @classmethod
    def read(cls, folder: Path) -> Ownership | None:
        """The folder's marker; None when it has none (or one we cannot read as ours)."""
        try:
            record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("written_by") != "agfsync":
            return None
        entries = record.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            return None
        pid = record.get("pid")
        return cls(
            kind=str(record.get("kind")),
            entries=entries,
            pid=pid if isinstance(pid, int) else None,
        )


def matches(relative: str, entry: str) -> bool:
    """Whether the path `relative` is `entry`: a file path, or a folder (ending in "/")
    and everything under it; `*` in an entry matches within one name
    (`checkpoint-*/`)."""
    if entry.endswith("/"):
        depth = entry.count("/")
        parts = relative.split("/")
        return len(parts) > depth and _same("/".join(parts[:depth]) + "/", entry)
    return _same(relative, entry)


def _same(path: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(path, pattern) if "*" in pattern else path == pattern


def _files(folder: Path) -> Iterable[str]:
    """Relative posix paths of the files (and links) under `folder`, skipping the
    marker and any nested folder with a marker of its own (another agfsync folder)."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [name for name in dirs if not (here / name / MARKER).is_file()]
        for name in files:
            path = here / name
            if path.parent == folder and name == MARKER:
                continue
            yield path.relative_to(folder).as_posix()
        for name in dirs:
            if (here / name).is_symlink():
                yield (here / name).relative_to(folder).as_posix()


def _foreign(folder: Path, ownership: Ownership | None) -> list[str]:
    """Paths under `folder` that agfsync did not write."""
    return [path for path in _files(folder) if ownership is None or not ownership.covers(path)]


def _names(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_output_folder(
    folder: Path,
    kind: str,
    *,
    flag: str,
    overwrite: bool = False,
    reserved: Sequence[str] = (),
    protected: Sequence[Path] = (),
) -> None:
    """Stop with a one-line message unless `folder` may receive a `kind` folder.

    `reserved` are the top-level names the command writes (checked with `--overwrite`:
    a file of the user's under one of them is never replaced). `protected` are folders
    the command reads (its source): the output must not be one of them or hold one.
    """
    target = folder.resolve()
    for source in protected:
        source = source.resolve()
        if target == source or target in source.parents:
            raise ConfigurationError(
                f"{flag} {folder} would replace {source}, which this command reads; choose "
                "another folder."
            )
    if target.exists() and not target.is_dir():
        raise ConfigurationError(f"{flag} {folder} is a file, not a folder; choose a folder.")
    if not target.is_dir() or not any(target.iterdir()):
        _check_writable(target, flag)
        return
    ownership = Ownership.read(target)
    if ownership is not None and ownership.kind != kind:
        raise ConfigurationError(
            f"{flag} {folder} holds an agfsync {ownership.kind}, not a {kind}; choose another "
            "folder."
        )
    foreign = _foreign(target, ownership)
    if foreign and not overwrite:
        what = (
            "holds files agfsync did not write"
            if ownership is not None
            else "is not empty and was not written by agfsync"
        )
        raise ConfigurationError(
            f"{flag} {folder} {what} ({_names(foreign)}); choose a new folder or pass "
            "--overwrite (which keeps those files)."
        )
    taken = sorted(
        {
            path
            for path in foreign
            for name in reserved
            if matches(path, name) or matches(path, name.rstrip("/"))
        }
    )
    if taken:
        raise ConfigurationError(
            f"{flag} {folder} holds {_names(taken)}, which agfsync did not write and would "
            "have to replace; move them or choose another folder."
        )
    _check_writable(target, flag)


def _check_writable(target: Path, flag: str) -> None:
    """The folder (or its nearest existing parent) accepts a new file."""
    existing = target
    while not existing.exists():
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".agfsync-probe-"):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"Cannot write to {flag} {target} ({error.strerror or error}); choose a folder "
            "you can write to."
        ) from error


def write_folder(
    folder: Path,
    kind: str,
    write: Callable[[Path], object],
    *,
    flag: str,
    overwrite: bool = False,
    protected: Sequence[Path] = (),
    what: str = "the folder",
) -> None:
    """Write a whole `kind` folder with `write(staging)`, then move it into `folder`.

    The staging folder is a hidden sibling of our own, so a crash or a full disk leaves
    `folder` as it was. A `folder` of ours is replaced file by file (the files we wrote
    before and do not write now are deleted); files that are not ours stay. Raises
    ConfigurationError, before anything is written, when the rule above forbids it, and
    when writing fails for lack of space (naming the cause; nothing changed).
    """
    target = folder.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent)
    )
    Ownership(kind=STAGING, pid=os.getpid()).save(staging)
    try:
        write(staging)
        staged = sorted(_files(staging))
        # Checked again now: the folder may have changed while the command ran.
        check_output_folder(
            folder,
            kind,
            flag=flag,
            overwrite=overwrite,
            reserved=_top_level(staged),
            protected=protected,
        )
        _commit(staging, target, Ownership(kind=kind, entries=staged))
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(error, OSError):
            raise
        raise ConfigurationError(
            f"Could not write {what} to {target} ({error.strerror or error}); nothing was changed "
            "there. Free disk space (or fix the cause) and run the same command again: "
            "finished work is reused."
        ) from error


def _top_level(paths: Iterable[str]) -> list[str]:
    return sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in paths})


def _commit(staging: Path, target: Path, new: Ownership) -> None:
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        if target.exists():
            target.rmdir()
        new.save(staging)
        staging.rename(target)
        return
    old = Ownership.read(target) or Ownership(kind=new.kind)
    # Known first as the union, so that a crash half-way leaves every path accounted for.
    Ownership(kind=new.kind, entries=sorted({*old.entries, *new.entries})).save(target)
    for relative in new.entries:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, destination)
    for relative in set(old.entries) - set(new.entries):
        _remove_owned(target, relative)
    new.save(target)
    shutil.rmtree(staging, ignore_errors=True)


def _remove_owned(target: Path, relative: str) -> None:
    """Delete a path agfsync wrote, and the folders it leaves empty (up to `target`)."""
    path = target / relative
    if relative.endswith("/"):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    parent = path.parent
    while parent != target and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _remove_abandoned_staging(target: Path) -> None:
    """Staging folders of ours left by a killed command (marked, and their process
    gone) are removed; nothing else is touched."""
    for candidate in target.parent.glob(f".{target.name}.*{STAGING_SUFFIX}"):
        ownership = Ownership.read(candidate)
        if ownership is not None and ownership.kind == STAGING and not is_alive(ownership.pid):
            shutil.rmtree(candidate, ignore_errors=True)


@dataclass
class OwnedFolder:
    """A folder that a command fills as it runs (evaluation, training), claimed first.

    Claiming checks the rule above, creates the folder and writes its marker; `add`
    records what the command puts there, so that a later run may replace it, and
    `owns` tells whether a path may be deleted.
    """

    path: Path
    ownership: Ownership

    def add(self, *relative: str) -> None:
        missing = [entry for entry in relative if entry not in self.ownership.entries]
        if missing:
            self.ownership.entries += missing
            self.ownership.save(self.path)

    def owns(self, relative: str) -> bool:
        return self.ownership.covers(relative)


def claim_folder(
    folder: Path,
    kind: str,
    *,
    flag: str,
    overwrite: bool = False,
    reserved: Sequence[str] = (),
    protected: Sequence[Path] = (),
) -> OwnedFolder:
    """Check `folder` (see `check_output_folder`), create it and mark it as ours."""
    check_output_folder(
        folder, kind, flag=flag, overwrite=overwrite, reserved=reserved, protected=protected
    )
    target = folder.resolve()
    target.mkdir(parents=True, exist_ok=True)
    ownership = Ownership.read(target) or Ownership(kind=kind)
    ownership.save(target)
    return OwnedFolder(target, ownership)
