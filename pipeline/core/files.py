"""Atomic outputs, the one mechanism for every file and directory the pipeline writes for a user: build in a hidden
sibling, then move into place, so a crash never leaves a mix and a reader never sees half a file.

Replacing an existing directory uses Linux's renameat2(RENAME_EXCHANGE), one atomic step: at every instant `target`
is the whole previous directory or the whole new one. Elsewhere it takes two renames (old aside, new in); a crash
between them leaves `target` missing and the previous directory beside it, which the next `atomic_dir` on the same
target restores before doing anything else. Staging directories of killed processes are removed by the same call.

Staging names are random and created exclusively (`O_EXCL`, `mkdir`), so a planted file or symlink is never followed,
and with the mode the process's umask gives (the umask is never changed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import glob
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core.errors import UserError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _create_unique(parent: Path, prefix: str, create: Callable[[Path], None]) -> Path:
    """`parent / (prefix + random)`, created by `create`, which must fail with FileExistsError on an existing path."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent / prefix))


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _leftovers(target: Path, kind: str) -> list[tuple[Path, int]]:
    """Hidden siblings `.{name}.{kind}-{pid}-...` of target, with the pid that made them."""
    found = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
        pid = path.name[len(f".{target.name}.{kind}-") :].split("-", 1)[0]
        if pid.isdigit():
            found.append((path, int(pid)))
    return found


def recover(target: str | Path) -> None:
    """Undo what a killed process left around `target`: restore a previous directory moved aside, drop staging."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for path, pid in _leftovers(target, "tmp"):
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    for path, pid in sorted(_leftovers(target, "old"), key=lambda item: item[0].stat().st_mtime, reverse=True):
        if _alive(pid) and pid != os.getpid():
            continue  # another process is between its two renames right now
        if not target.exists():
            path.rename(target)  # crashed between "old aside" and "new in": the previous directory comes back
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces `target`, on any error it is removed.

    The files named in `keep` (e.g. reward_model/'s tracked .gitignore) are carried over from an existing `target`:
    the staging directory starts with copies of them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    staging = _create_unique(target.parent, f".{target.name}.tmp-{os.getpid()}-", lambda p: os.mkdir(p, 0o777))
    try:
        for name in keep:
            if (target / name).is_file() and not (target / name).is_symlink():
                shutil.copy2(target / name, staging / name)
        yield staging
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield the path of a new, empty, exclusively created file beside `target`; write it whole, and on success it
    replaces `target` in one rename. On any error it is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_unique(target.parent, f".{target.name}.tmp-{os.getpid()}-", _new_file)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the OS or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. some network filesystems: fall back to two renames
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(staging: Path, target: Path) -> None:
    """Move a complete directory into place; an existing `target` is swapped out, then deleted."""
    if not target.exists():
        staging.rename(target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous directory
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{staging.name[-8:]}")
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# reward_model/ as the repository ships it: a self-ignoring .gitignore (training carries it over with
# atomic_dir(keep=...), so `git status` stays clean), or, in older checkouts, a README saying training replaces it.
PLACEHOLDER_GITIGNORE = ("*", "!.gitignore")
PLACEHOLDER_README = "Training replaces this folder"


def _is_placeholder(target: Path, entries: list[str]) -> bool:
    def matches(name: str) -> bool:
        text = (target / name).read_text(errors="replace")
        if name == ".gitignore":
            lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            return tuple(lines) == PLACEHOLDER_GITIGNORE
        return PLACEHOLDER_README in " ".join(text.split())

    placeholders = {".gitignore", "README.md"}
    return (
        bool(entries) and set(entries) <= placeholders and all((target / n).is_file() and matches(n) for n in entries)
    )


def _check_location(target: Path, what: str) -> None:
    """The folder `target` goes into must be (or be creatable in) a writable folder, not a file."""
    ancestor = target.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {target}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(
            f"{what} {target}: cannot write in {ancestor} (permission denied); choose a folder you can write to"
        )


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_file(target: str | Path, what: str, inputs: tuple[str | None, ...] = ()) -> None:
    """Refuse, before any work, an output file that could not be written or would replace an input.

    The twin of check_replaceable for one file (written by atomic_file): not an existing directory or anything but a
    regular file, not under a file, in a writable folder, and none of the `inputs`.
    """
    target = Path(os.path.abspath(target))
    for name in filter(None, inputs):
        if _same_path(Path(name), target):
            raise UserError(f"{what} {target} is the input file {name}; refusing to overwrite it, choose another name")
    if target.is_dir():
        raise UserError(f"{what} {target} is a directory; give the path of a file to write (new or existing)")
    if os.path.lexists(target) and target.exists() and not target.is_file():
        raise UserError(f"{what} {target} exists and is not a regular file; choose another name")
    _check_location(target, what)


def check_replaceable(
    target: str | Path,
    own_files: tuple[str, ...],
    what: str,
    inputs: tuple[str | None, ...] = (),
    marks: tuple[str, ...] | None = None,
) -> bool:
    """Refuse, before any work, a target whose replacement would delete what this program did not write.

    The target is replaced as a whole when saving, so it must be absent, empty, the placeholder reward_model/, or an
    earlier output of ours: every entry one of `own_files` (names or patterns such as "model-*.safetensors": all
    this program writes there) and all of `marks` present (default: the plain names of `own_files`); the return value
    is then True. Never the current directory or one above it, a mount point, a folder holding one of the `inputs`,
    or a folder under a file or in an unwritable one.
    """
    target = Path(os.path.abspath(target))
    cwd = Path.cwd()
    hint = f"choose a new folder for it, e.g. {target / 'reward_model'}"
    if target in (cwd, *cwd.parents) or target == Path.home():
        raise UserError(f"{what} {target} is the current directory or one above it: it is replaced as a whole; {hint}")
    if target.is_dir() and os.path.ismount(target):
        raise UserError(f"{what} {target} is a mount point and cannot be replaced as a whole; {hint}")
    for name in filter(None, inputs):  # unset inputs (no test_path) are None
        path = Path(os.path.abspath(name))
        if path.exists() and (path == target or target in path.parents):
            raise UserError(f"{what} {target} holds the input {name}, and it is replaced as a whole; {hint}")
    if target.exists() and not target.is_dir():
        raise UserError(f"{what} {target} exists and is not a directory")
    _check_location(target, what)
    if not target.is_dir():
        return False
    entries = sorted(p.name for p in target.iterdir())
    if not entries or _is_placeholder(target, entries):
        return False
    if marks is None:
        marks = tuple(name for name in own_files if not set(name) & set("*?["))
    foreign = [name for name in entries if not any(fnmatch.fnmatchcase(name, own) for own in own_files)]
    if not foreign and all(name in entries for name in marks):
        return True
    shown = foreign or entries
    listed = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")
    raise UserError(
        f"{what} {target} already holds files this program did not write ({listed}); it is replaced as a whole when "
        f"saving, so {hint}, or empty that one"
    )


@contextlib.contextmanager
def exclusive_output(target: str | Path, what: str) -> Iterator[None]:
    """Hold a lock beside `target` while a run works towards it: a second run on the same output stops at once with
    one line instead of replacing the first one's result. The operating system drops the lock with the process, so
    a crashed run leaves none behind."""
    from filelock import FileLock, Timeout

    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(target.parent / f".{target.name}.lock"))
        lock.acquire(timeout=0)
    except Timeout as err:
        raise UserError(
            f"{what} {target} is in use by another run (lock {lock.lock_file}); wait for it to finish or choose "
            f"another {what}"
        ) from err
    except OSError as err:
        raise UserError(f"{what} {target}: cannot write there ({err.strerror or err})") from err
    try:
        yield
    finally:
        # Removed while still held, so nothing is left beside the output; a run that opened it meanwhile has
        # already failed to take it (no waiting).
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()
