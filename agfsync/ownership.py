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

A marker is read as untrusted data (a folder may come from someone else). Each kind
declares every name it can ever write (`KINDS`); the folder is "not ours", never a
partial delete, when its marker lists a path that is absolute, holds `..`, runs through
a symbolic link or lies outside its kind's declared names, or a folder for a kind
written whole (`write_folder`, which lists files only). A file is replaced or deleted
only when the marker holds its fingerprint (size, time and sha256, or a link's target)
and the file still matches it: a file the user edited since, or one the marker lists
without a fingerprint, is never replaced, even with `--overwrite`. Deleting a link
removes the link, not what it points to.

Anything else stops the command with a one-line message naming the folder. Folders
written in one go (`write_folder`) are staged beside the target under a hidden name
of our own and moved into place once complete, so the target's parent folder must
accept files and the target must not be a mount point; while the files are moved, the
marker accepts each file's old fingerprint as well as its new one, so an interrupted
move is finished by the next run. Folders that fill up as a command runs (evaluation,
training) are claimed first (`claim_folder`): they may list whole folders of their kind
(`checkpoint-*/`), and record each top-level file's fingerprint once it is written
(`OwnedFolder.wrote`, `OwnedFolder.write_file`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
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
SCRATCH = ".agfsync-partial/"
"""In a folder filled in place: where `OwnedFolder.write_file` writes a file before
moving it into place (a folder of the kind's, whatever its declared names)."""


class FolderKind:
    """What an owned folder holds; one kind never replaces another."""

    DATASET = "dataset"
    PUBLICATION = "publication"
    REPORT = "report"
    EVALUATION = "evaluation"
    TRAINING = "training"
    CALIBRATION = "calibration"
    PRESETS = "presets"


@dataclass(frozen=True)
class KindRule:
    """The names a kind of folder can ever hold, and how it is written."""

    entries: tuple[str, ...]
    """Top-level names (a folder ends in "/", `*` matches within one name): every path
    a marker of this kind lists must be one of them or lie under one."""
    staged: bool = True
    """Written whole by `write_folder` (staged beside the target, then moved): its
    marker lists files only, each with a fingerprint. Otherwise filled in place
    (`claim_folder`): its marker may list whole folders of `entries`."""


DATASET_ENTRIES = (
    "README.md",
    "data/",
    "assets/",
    "artifacts/",
    "run.json",
    "pipeline.yaml",
    "pipeline.log",
)
KINDS: dict[str, KindRule] = {
    FolderKind.DATASET: KindRule(DATASET_ENTRIES),
    FolderKind.PUBLICATION: KindRule(DATASET_ENTRIES),
    FolderKind.REPORT: KindRule(("index.html", "assets/", "images/", "pairs/")),
    FolderKind.CALIBRATION: KindRule(("calibration.json", "weights.yaml", "README.md")),
    FolderKind.PRESETS: KindRule(("*.yaml",)),
    FolderKind.EVALUATION: KindRule(
        ("metrics.json", "observations.jsonl", "images/", "report/"), staged=False
    ),
    FolderKind.TRAINING: KindRule(
        (
            "checkpoint-*/",
            "logs/",
            "validation/",
            "latents-cache/",
            "README.md",
            "pytorch_lora_weights.safetensors",
            "model_index.json",
            "unet/",
            "vae/",
            "text_encoder/",
            "text_encoder_2/",
            "tokenizer/",
            "tokenizer_2/",
            "scheduler/",
            "feature_extractor/",
            "safety_checker/",
            "image_encoder/",
        ),
        staged=False,
    ),
    STAGING: KindRule(()),
}
"""Every kind of folder agfsync writes and the names it can ever write there (the
commands' own lists, `DATASET_ENTRIES`, `TRAINING_ENTRIES`, `EVALUATION_ENTRIES`,
`REPORT_ENTRIES`, are these; a test keeps them equal). A marker is trusted only as far
as this table: it cannot make agfsync replace anything else."""

Fingerprint = dict[str, object]


@dataclass
class Ownership:
    """The marker's content: the folder's kind and the paths agfsync wrote there. An
    entry ending in "/" covers everything under that folder."""

    kind: str
    entries: list[str] = field(default_factory=list)
    pid: int | None = None
    """The process writing a staging folder (which is abandoned once it is gone)."""
    files: dict[str, Fingerprint] = field(default_factory=dict)
    """Fingerprints (`fingerprint`) of the files agfsync put there, to tell a file the
    user edited since from one agfsync may replace."""
    previous: dict[str, list[Fingerprint]] = field(default_factory=dict)
    """While files are moved into place: the fingerprints of the files they replace,
    accepted as well as `files` until the move is complete."""

    def covers(self, relative: str) -> bool:
        if KINDS[self.kind].staged:  # literal file paths
            return relative in self.entries
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
        if self.previous:
            record["previous"] = {name: self.previous[name] for name in sorted(self.previous)}
        text = json.dumps(record, indent=1) + "\n"
        write_atomically(folder / MARKER, lambda partial: partial.write_text(text))

    @classmethod
    def read(cls, folder: Path) -> Ownership | None:
        """The folder's marker; None when it has none, or one we cannot trust as ours
        (see `_trusted_entry` and `KINDS`): a folder with a bad marker is not ours."""
        if (folder / MARKER).is_symlink():
            return None
        try:
            record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("written_by") != "agfsync":
            return None
        kind, entries = record.get("kind"), record.get("entries")
        if not isinstance(kind, str) or kind not in KINDS or not isinstance(entries, list):
            return None
        rule = KINDS[kind]
        if not all(_trusted_entry(entry) and _declared(entry, rule) for entry in entries):
            return None
        files, previous = record.get("files", {}), record.get("previous", {})
        listed = set(entries)
        if not isinstance(files, dict) or not all(
            name in listed and not name.endswith("/") and _valid_fingerprint(recorded)
            for name, recorded in files.items()
        ):
            return None
        if not isinstance(previous, dict) or not all(
            name in files
            and isinstance(recorded, list)
            and all(_valid_fingerprint(each) for each in recorded)
            for name, recorded in previous.items()
        ):
            return None
        pid = record.get("pid")
        return cls(
            kind=kind,
            entries=entries,
            pid=pid if isinstance(pid, int) else None,
            files=files,
            previous=previous,
        )


def _valid_fingerprint(recorded: object) -> bool:
    if not isinstance(recorded, dict):
        return False
    if "link" in recorded:
        return isinstance(recorded["link"], str)
    return (
        isinstance(recorded.get("size"), int)
        and isinstance(recorded.get("mtime_ns"), int)
        and isinstance(recorded.get("sha256"), str)
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


def _declared(entry: str, rule: KindRule) -> bool:
    """Whether a marker entry lies within the names its kind can write: a kind written
    whole lists files only (literal paths); a kind filled in place may list its declared
    folders and patterns (`checkpoint-*/`) or paths under them."""
    if rule.staged:
        return not entry.endswith("/") and any(matches(entry, name) for name in rule.entries)
    return any(_within(entry, name) for name in (*rule.entries, SCRATCH))


def _within(entry: str, name: str) -> bool:
    """Whether every path the entry (possibly a pattern) covers is covered by `name`."""
    if entry == name:
        return True
    if name.endswith("/"):
        depth = name.count("/")
        parts = entry.split("/")
        head = "/".join(parts[:depth]) + "/"
        return len(parts) > depth and (head == name or ("*" not in head and _same(head, name)))
    return "*" not in entry and _same(entry, name)


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


def fingerprint(path: Path) -> Fingerprint:
    """What tells, later, whether the file at `path` is still the one agfsync wrote (a
    symbolic link: where it points)."""
    if path.is_symlink():
        return {"link": os.readlink(path)}
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(path: Path, accepted: Sequence[Fingerprint]) -> bool:
    """Whether `path` is still a file agfsync wrote: one of the `accepted` fingerprints
    (same size and time, or same content when the time changed, as a copy of the
    folder does; a link pointing to the same place). A missing file is unchanged
    (nothing of the user's to keep); with no fingerprint, a file that is there is not
    (agfsync cannot tell it is its own)."""
    if not path.exists() and not path.is_symlink():
        return True
    for recorded in accepted:
        if "link" in recorded:
            if path.is_symlink() and os.readlink(path) == recorded["link"]:
                return True
            continue
        if path.is_symlink() or not path.is_file():
            continue
        status = path.stat()
        if status.st_size == recorded.get("size") and (
            status.st_mtime_ns == recorded.get("mtime_ns")
            or _sha256(path) == recorded.get("sha256")
        ):
            return True
    return False


def _listed_files(ownership: Ownership) -> list[str]:
    """The files the marker lists (folders and patterns excluded)."""
    staged = KINDS[ownership.kind].staged
    files = {
        entry
        for entry in ownership.entries
        if staged or (not entry.endswith("/") and "*" not in entry)
    }
    return sorted(files | set(ownership.files))


def _edited(folder: Path, ownership: Ownership | None) -> tuple[list[str], list[str]]:
    """Files the marker lists that are not (or cannot be told to be) what agfsync
    wrote: (changed since, listed without a fingerprint)."""
    if ownership is None:
        return [], []
    changed: list[str] = []
    unrecorded: list[str] = []
    for name in _listed_files(ownership):
        recorded = ownership.files.get(name)
        accepted = [recorded, *ownership.previous.get(name, [])] if recorded else []
        if not _unchanged(folder / name, accepted):
            (changed if recorded else unrecorded).append(name)
    return changed, unrecorded


def matches(relative: str, entry: str) -> bool:
    """Whether the path `relative` is `entry`: a file path, or a folder (ending in "/")
    and everything under it; `*` in an entry matches within one name
    (`checkpoint-*/`), every other character only itself."""
    if entry.endswith("/"):
        depth = entry.count("/")
        parts = relative.split("/")
        return len(parts) > depth and _same("/".join(parts[:depth]) + "/", entry)
    return _same(relative, entry)


def _same(path: str, pattern: str) -> bool:
    """`*` matches within one name, never across a "/"; `?` and `[` are literal."""
    if "*" not in pattern:
        return path == pattern
    names, patterns = path.split("/"), pattern.split("/")
    return len(names) == len(patterns) and all(
        fnmatch.fnmatchcase(name, "*".join(glob.escape(literal) for literal in part.split("*")))
        for name, part in zip(names, patterns, strict=True)
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
    if ownership is None:
        return list(_files(folder))
    if KINDS[ownership.kind].staged:  # literal paths: a set, for folders of many files
        listed = set(ownership.entries)
        return [path for path in _files(folder) if path not in listed]
    return [path for path in _files(folder) if not ownership.covers(path)]


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
        _check_staging_place(folder, kind, flag=flag)
        return
    ownership = _read_trusted(target)
    if ownership is not None and ownership.kind != kind:
        raise ConfigurationError(
            f"{flag} {folder} is an agfsync folder of kind {ownership.kind!r}, and this "
            f"command writes kind {kind!r}; choose another folder."
        )
    changed, unrecorded = _edited(target, ownership)
    if changed:
        raise ConfigurationError(
            f"{flag} {folder}: {_names(changed)} changed since agfsync wrote it and would be "
            "replaced; move it out of the folder and run again (agfsync never replaces a "
            "file it did not write, even with --overwrite)."
        )
    if unrecorded:
        raise ConfigurationError(
            f"{flag} {folder}: {_names(unrecorded)} is listed in the folder's "
            f"{MARKER} without a record of the file agfsync wrote (an older agfsync, a run "
            "stopped while writing it, or an edited marker), so agfsync cannot tell it from "
            "a file of yours and would replace it; move it out of the folder and run again "
            "(agfsync never replaces a file it did not write, even with --overwrite)."
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
            for name in [*reserved, MARKER, SCRATCH]
            if matches(path, name) or matches(path, name.rstrip("/"))
        }
    )
    if taken:
        raise ConfigurationError(
            f"{flag} {folder} holds {_names(taken)}, which agfsync did not write and would "
            "have to replace; move them or choose another folder."
        )
    check_writable(target, what=flag, fix="choose a folder you can write to")
    _check_staging_place(folder, kind, flag=flag)


def _check_staging_place(folder: Path, kind: str, *, flag: str) -> None:
    """A kind written whole is staged beside `folder` and moved into it: an existing
    `folder` must be on its parent's file system (not a mount point, such as a docker
    volume: the move would fail after all the work) and the parent must accept files."""
    if not KINDS[kind].staged:
        return
    target = folder.resolve()
    if not target.is_dir():
        return  # made in the nearest existing folder above, which accepts files
    inside_it = f"choose a folder inside it (such as {folder / kind})"
    if os.path.ismount(target) or target.stat().st_dev != target.parent.stat().st_dev:
        raise ConfigurationError(
            f"{flag} {folder} is a mount point (another file system than "
            f"{target.parent}): agfsync writes the {kind} beside it and moves it into place, "
            f"which cannot cross file systems; {inside_it}."
        )
    error = _probe(target.parent)
    if error is not None:
        raise ConfigurationError(
            f"Cannot write to {flag} {folder}: agfsync writes the {kind} beside it first, "
            f"in {target.parent}, which does not accept files ({error.strerror or error}); "
            f"{inside_it}."
        )


def _has_marker(folder: Path) -> bool:
    return (folder / MARKER).exists() or (folder / MARKER).is_symlink()


def _probe(folder: Path) -> OSError | None:
    """Why `folder` does not accept a new file (None when it does); the probe file is
    removed at once."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".agfsync-probe-"):
            pass
    except OSError as error:
        return error
    return None


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
    error = _probe(existing)
    if error is not None:
        raise ConfigurationError(
            f"Cannot write to {what} {folder} ({error.strerror or error}); {fix}."
        )


class _CommitInterrupted(Exception):
    """An OSError once the target had started to change (some files moved)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


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

    The staging folder is a hidden sibling of our own, so a crash or a full disk while
    writing leaves `folder` as it was; one while the files are moved leaves a folder
    the next run finishes. A `folder` of ours is replaced file by file (the files we
    wrote before and do not write now are deleted); files that are not ours stay.
    Raises ConfigurationError when the rule above forbids it (callers check it with
    `check_output_folder` before their work; it is checked again here, once the files
    are staged, before anything in `folder` changes) and when writing fails (naming the
    cause and the state the folder is in).
    """
    target = folder.resolve()
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(target)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent)
        )
        staging.chmod(folder_mode())  # it becomes the output: readable as any new folder
        Ownership(kind=STAGING, pid=os.getpid()).save(staging)
        write(staging)
        staged = sorted(_files(staging))
        undeclared = [path for path in staged if not _declared(path, KINDS[kind])]
        if undeclared:
            raise RuntimeError(
                f"agfsync bug: a {kind} folder may not hold {_names(undeclared)} "
                "(agfsync.ownership.KINDS)"
            )
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
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, _CommitInterrupted):
            cause = error.error
            raise ConfigurationError(
                f"Could not finish writing {what} to {target} ({cause.strerror or cause}): "
                "part of agfsync's files there are new and part are still the earlier "
                "ones (none of yours was touched). Free disk space (or fix the cause) and "
                "run the same command again: it finishes the folder, and finished work is "
                "reused."
            ) from cause
        if not isinstance(error, OSError):
            raise
        raise ConfigurationError(
            f"Could not write {what} to {target} ({error.strerror or error}); nothing was changed "
            "there. Free disk space (or fix the cause) and run the same command again: "
            "finished work is reused."
        ) from error


def folder_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask (`mkdtemp` gives
    0700, which would hide an output folder from the other users of a machine). The
    umask is read from /proc (Linux) without changing it; elsewhere by setting it for
    an instant (to the most private value meanwhile)."""
    umask = _umask_from_proc()
    if umask is None:
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o777 & ~umask


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _top_level(paths: Iterable[str]) -> list[str]:
    return sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in paths})


def _commit(staging: Path, target: Path, new: Ownership) -> None:
    new.files = {relative: fingerprint(staging / relative) for relative in new.entries}
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
    # Known first as the union, so that a crash half-way leaves every path accounted
    # for: each file may be the new one or still the one it replaces.
    previous = {
        relative: [
            recorded
            for recorded in [old.files.get(relative), *old.previous.get(relative, [])]
            if recorded is not None and recorded != new.files[relative]
        ]
        for relative in new.files
    }
    Ownership(  # an OSError here changes nothing (the marker is replaced atomically)
        kind=new.kind,
        entries=sorted({*old.entries, *new.entries}),
        files={**old.files, **new.files},
        previous={relative: accepted for relative, accepted in previous.items() if accepted},
    ).save(target)
    try:
        for relative, destination in destinations.items():
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, destination)
        for relative, path in stale.items():
            _remove_owned(target, relative, path)
        new.save(target)
    except OSError as error:
        raise _CommitInterrupted(error) from error
    shutil.rmtree(staging, ignore_errors=True)


def _remove_owned(target: Path, relative: str, path: Path) -> None:
    """Delete the file (or link: removed, not followed) agfsync wrote as `relative`,
    and the folders it leaves empty (up to `target`)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    parent = path.parent
    while parent != target and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _remove_abandoned_staging(target: Path) -> None:
    """Staging folders of ours left by a killed command (marked, and their process
    gone) are removed; nothing else is touched."""
    pattern = f".{glob.escape(target.name)}.*{STAGING_SUFFIX}"
    for candidate in target.parent.glob(pattern):
        ownership = Ownership.read(candidate)
        if ownership is not None and ownership.kind == STAGING and not is_alive(ownership.pid):
            shutil.rmtree(candidate, ignore_errors=True)


@dataclass
class OwnedFolder:
    """A folder that a command fills as it runs (evaluation, training), claimed first.

    Claiming checks the rule above, creates the folder and writes its marker; `add`
    claims the names the command will write there (folders, whose content is then
    agfsync's, and files, which stay unrecorded until written); `wrote` and
    `write_file` record each file's fingerprint once written, so that a later run
    replaces it only while it is unchanged; `owns` tells whether a path is agfsync's.
    """

    path: Path
    ownership: Ownership

    def add(self, *relative: str) -> None:
        self._check_declared(relative)
        missing = [entry for entry in relative if entry not in self.ownership.entries]
        if missing:
            self.ownership.entries += missing
            self.ownership.save(self.path)

    def wrote(self, *relative: str) -> None:
        """Record the fingerprints of the files just written at `relative` (a name that
        holds no file is skipped)."""
        self._check_declared(relative)
        written = [name for name in relative if (self.path / name).is_file()]
        for name in written:
            if name not in self.ownership.entries:
                self.ownership.entries.append(name)
            self.ownership.files[name] = fingerprint(self.path / name)
            self.ownership.previous.pop(name, None)
        if written:
            self.ownership.save(self.path)

    def write_file(self, relative: str, write: Callable[[Path], object]) -> Path:
        """Create or replace the file `relative` with what `write(partial)` writes in
        `SCRATCH`, moved into place atomically, its fingerprint recorded (a stop at any
        moment leaves the old file or the new one, each accepted by the marker until the
        new one is in; a partial file left in `SCRATCH` is the folder's own)."""
        self._check_declared((relative,))
        path = owned_path(self.path, relative)
        self.add(SCRATCH)
        scratch = owned_path(self.path, SCRATCH)
        scratch.mkdir(exist_ok=True)
        partial = scratch / relative.replace("/", "_")
        try:
            write(partial)
            new = fingerprint(partial)
            old = self.ownership.files.get(relative)
            if relative not in self.ownership.entries:
                self.ownership.entries.append(relative)
            self.ownership.files[relative] = new
            if old is not None and old != new:
                self.ownership.previous[relative] = [old]
            self.ownership.save(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        self.ownership.previous.pop(relative, None)
        self.ownership.save(self.path)
        with contextlib.suppress(OSError):
            scratch.rmdir()  # when empty
        return path

    def owns(self, relative: str) -> bool:
        return self.ownership.covers(relative)

    def _check_declared(self, relative: Iterable[str]) -> None:
        undeclared = [
            name
            for name in relative
            if not (_trusted_entry(name) and _declared(name, KINDS[self.ownership.kind]))
        ]
        if undeclared:
            raise ValueError(
                f"agfsync bug: a {self.ownership.kind} folder may not hold "
                f"{_names(undeclared)} (agfsync.ownership.KINDS)"
            )


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
