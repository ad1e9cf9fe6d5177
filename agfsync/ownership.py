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

A marker is read as untrusted data (a folder may come from someone else): an entry
that is absolute, holds `..` or runs through a symbolic link makes the whole folder
"not ours", never a partial delete; a file agfsync wrote and the user then edited
(its recorded size, time and sha256 no longer match) is never replaced, even with
`--overwrite`; deleting a link removes the link, not what it points to.

Anything else stops the command with a one-line message naming the folder. Folders
written in one go (`write_folder`) are staged beside the target under a hidden name
of our own and moved into place once complete; folders that fill up as a command
runs (evaluation, training) are claimed first (`claim_folder`) and record what they
add.
"""

from __future__ import annotations

import fnmatch
import hashlib
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
from agfsync.safe_paths import UnsafePathError, inside

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
    PRESETS = "presets"


@dataclass
class Ownership:
    """The marker's content: the folder's kind and the paths agfsync wrote there. An
    entry ending in "/" covers everything under that folder."""

    kind: str
    entries: list[str] = field(default_factory=list)
    pid: int | None = None
    """The process writing a staging folder (which is abandoned once it is gone)."""
    files: dict[str, dict[str, object]] = field(default_factory=dict)
    """Fingerprints (`fingerprint`) of the files `write_folder` put there, to tell a
    file the user edited since from one agfsync may replace."""

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
        if self.files:
            record["files"] = {name: self.files[name] for name in sorted(self.files)}
        text = json.dumps(record, indent=1) + "\n"
        write_atomically(folder / MARKER, lambda partial: partial.write_text(text))

    @classmethod
    def read(cls, folder: Path) -> Ownership | None:
        """The folder's marker; None when it has none, or one we cannot trust as ours
        (see `_trusted_entry`): a folder with a bad marker is simply not ours."""
        if (folder / MARKER).is_symlink():
            return None
        try:
            record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("written_by") != "agfsync":
            return None
        entries = record.get("entries")
        if not isinstance(entries, list) or not all(_trusted_entry(e) for e in entries):
            return None
        files = record.get("files", {})
        if not isinstance(files, dict) or not all(
            _trusted_entry(name) and not name.endswith("/") and isinstance(recorded, dict)
            for name, recorded in files.items()
        ):
            return None
        pid = record.get("pid")
        return cls(
            kind=str(record.get("kind")),
            entries=entries,
            pid=pid if isinstance(pid, int) else None,
            files=files,
        )


def _trusted_entry(entry: object) -> bool:
    """Whether a marker entry is a plain relative path: not absolute, no `..`, `.` or
    empty part, no backslash or NUL (a folder entry ends in one "/")."""
    if not isinstance(entry, str) or not entry or len(entry) > 4096:
        return False
    if entry.startswith("/") or "\\" in entry or "\x00" in entry:
        return False
    parts = (entry[:-1] if entry.endswith("/") else entry).split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _read_trusted(folder: Path) -> Ownership | None:
    """The folder's marker when every path it lists may be replaced or deleted there
    (`owned_path`); None otherwise (the folder is then not ours)."""
    ownership = Ownership.read(folder)
    if ownership is None:
        return None
    try:
        for entry in [*ownership.entries, *ownership.files]:
            owned_path(folder, entry)
    except UnsafePathError:
        return None
    return ownership


def owned_path(folder: Path, relative: str) -> Path:
    """`folder / relative`, for a path agfsync replaces or deletes there: no part of it
    but the last is a symbolic link, and it stays inside `folder` once resolved
    (`safe_paths.inside`). The last part is not resolved: a link is itself replaced or
    removed, never what it points to."""
    if not _trusted_entry(relative):
        raise UnsafePathError(f"Path {relative!r} is not a plain path inside {folder}.")
    base = folder.resolve()
    path = base / relative.rstrip("/")
    for ancestor in list(path.relative_to(base).parents)[:-1]:
        if (base / ancestor).is_symlink():
            raise UnsafePathError(
                f"Path {relative!r} under {folder} runs through the symbolic link {ancestor}."
            )
    inside(base, path.parent.relative_to(base).as_posix() if path.parent != base else ".")
    return path


def fingerprint(path: Path) -> dict[str, object]:
    """What tells, later, whether the file at `path` is still the one agfsync wrote."""
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(path: Path, recorded: dict[str, object]) -> bool:
    """Whether `path` is still the file agfsync wrote (same size and time, or same
    content when the time changed, as a copy of the folder does); a missing file is
    unchanged (nothing of the user's to keep)."""
    if not path.exists() and not path.is_symlink():
        return True
    if path.is_symlink() or not path.is_file():
        return False
    status = path.stat()
    if status.st_size != recorded.get("size"):
        return False
    return status.st_mtime_ns == recorded.get("mtime_ns") or _sha256(path) == recorded.get("sha256")


def _edited(folder: Path, ownership: Ownership | None) -> list[str]:
    """Files agfsync wrote in `folder` that have been changed since."""
    if ownership is None:
        return []
    return sorted(
        name
        for name, recorded in ownership.files.items()
        if not _unchanged(folder / name, recorded)
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
    """`*` matches within one name, never across a "/"."""
    if "*" not in pattern:
        return path == pattern
    names, patterns = path.split("/"), pattern.split("/")
    return len(names) == len(patterns) and all(
        fnmatch.fnmatchcase(name, part) for name, part in zip(names, patterns, strict=True)
    )


def _files(folder: Path) -> Iterable[str]:
    """Relative posix paths of the files (and links) under `folder`, skipping the
    marker and any nested folder with a marker of its own (another agfsync folder)."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [name for name in dirs if _read_trusted(here / name) is None]
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
        check_writable(target, what=flag, fix="choose a folder you can write to")
        return
    ownership = _read_trusted(target)
    if ownership is not None and ownership.kind != kind:
        raise ConfigurationError(
            f"{flag} {folder} is an agfsync folder of kind {ownership.kind!r}, and this "
            f"command writes kind {kind!r}; choose another folder."
        )
    edited = _edited(target, ownership)
    if edited:
        raise ConfigurationError(
            f"{flag} {folder}: {_names(edited)} changed since agfsync wrote it and would be "
            "replaced; move it out of the folder and run again (agfsync never replaces a "
            "file it did not write, even with --overwrite)."
        )
    foreign = _foreign(target, ownership)
    if ownership is None and _has_marker(target):
        foreign.append(MARKER)  # a marker we cannot trust is the user's file
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
            for name in [*reserved, MARKER]
            if matches(path, name) or matches(path, name.rstrip("/"))
        }
    )
    if taken:
        raise ConfigurationError(
            f"{flag} {folder} holds {_names(taken)}, which agfsync did not write and would "
            "have to replace; move them or choose another folder."
        )
    check_writable(target, what=flag, fix="choose a folder you can write to")


def _has_marker(folder: Path) -> bool:
    return (folder / MARKER).exists() or (folder / MARKER).is_symlink()


def check_writable(folder: Path, *, what: str, fix: str) -> None:
    """Raise ConfigurationError unless `folder` accepts a new file: the folder itself, or,
    while it does not exist, the nearest existing folder above it (where it will be
    created). The probe file is removed at once."""
    target = folder.expanduser().resolve()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(
            f"Cannot write to {what} {folder}: {existing} is a file, not a folder; {fix}."
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".agfsync-probe-"):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"Cannot write to {what} {folder} ({error.strerror or error}); {fix}."
        ) from None


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
    staging.chmod(folder_mode())  # it becomes the output: readable as any new folder
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


def folder_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask (`mkdtemp` gives
    0700, which would hide an output folder from the other users of a machine)."""
    umask = os.umask(0o077)  # read it by setting it (the most private value meanwhile)
    os.umask(umask)
    return 0o777 & ~umask


def _top_level(paths: Iterable[str]) -> list[str]:
    return sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in paths})


def _commit(staging: Path, target: Path, new: Ownership) -> None:
    new.files = {
        relative: fingerprint(staging / relative)
        for relative in new.entries
        if (staging / relative).is_file() and not (staging / relative).is_symlink()
    }
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        if target.exists():
            target.rmdir()
        new.save(staging)
        staging.rename(target)
        return
    old = _read_trusted(target) or Ownership(kind=new.kind)
    # Every path checked before anything changes: a bad one stops the whole commit.
    destinations = {relative: owned_path(target, relative) for relative in new.entries}
    stale = {
        relative: owned_path(target, relative)
        for relative in old.entries
        if relative not in new.entries
    }
    # Known first as the union, so that a crash half-way leaves every path accounted for.
    Ownership(
        kind=new.kind,
        entries=sorted({*old.entries, *new.entries}),
        files={**old.files, **new.files},
    ).save(target)
    for relative, destination in destinations.items():
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, destination)
    for relative, path in stale.items():
        _remove_owned(target, relative, path)
    new.save(target)
    shutil.rmtree(staging, ignore_errors=True)


def _remove_owned(target: Path, relative: str, path: Path) -> None:
    """Delete the path agfsync wrote as `relative` (at `owned_path`: a link is removed,
    not followed; a folder only where the entry is one), and the folders it leaves
    empty (up to `target`)."""
    if relative.endswith("/"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)  # unlinks the links inside, unfollowed
    elif path.is_symlink() or path.is_file():
        path.unlink()
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
    ownership = _read_trusted(target) or Ownership(kind=kind)
    ownership.save(target)
    return OwnedFolder(target, ownership)
