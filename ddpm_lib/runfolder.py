"""A run folder that an interrupted, crowded or full disk cannot corrupt.

RunLock            one writer per run folder; a crashed writer never blocks the next
atomic_write       a file is either the old one or the complete new one, never half of each
remove_stale_temporaries  tidy the half-written files an interruption left behind
file_kind          what is at a path, in words, for refusing a folder or a FIFO where a file belongs
open_own_file      open a file the project writes, never through a link
config_differences which settings a resumed run would silently change
check_writable     refuse an unwritable output before minutes of computing, not after

Nothing here writes through a symbolic link: a link (or a folder, a FIFO) planted where the lock
or a temporary file goes is refused or removed, never followed, so a run folder someone else
prepared cannot make a run overwrite a file outside it.

Every error here is one line that says what happened and what to do about it.
This module imports nothing heavy, so it can be used before torch is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"
# Names of the temporary files a write leaves when it is killed: atomic_write's ".<stem>.tmp-<pid>-<8 random
# characters><suffix>", e.g. ".epoch_001.tmp-42-k3v9x0qa.png" (without the random part: the names of earlier
# versions), and safetensors' own ".tmp<6 letters or digits>", which save_file writes and renames over its target.
TEMPORARY_PATTERN = re.compile(r"^(\..+\.tmp-\d+(-[a-z0-9_]{8})?(\.\w+)?|\.tmp[A-Za-z0-9]{6})$")
# The temporary name older versions of the trainer gave a checkpoint, outside TEMPORARY_PATTERN: a folder
# such a version left after a kill still holds it, and a resume there tidies it like the others.
LEGACY_TEMPORARIES = ("checkpoint.pt.tmp",)
# Settings of the machine or of where files live, not of what is learned: a run may move between them.
MACHINE_SETTINGS = ("device", "amp", "cuda_graphs", "cpu_threads", "out_dir", "data_root")
# Windows byte-range locks are mandatory, so the lock sits on one byte far past the holder's
# text: other processes can still read who holds it.
_WINDOWS_LOCK_OFFSET = 1 << 20
# What flock says on file systems without locks (some NFS setups, some FUSE mounts).
_LOCKS_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
# A write the disk stopped: errno -> (what happened, what to do).
_FREE_SPACE = "Free some space (or write elsewhere)"
_WRITE_STOPPED = {
    errno.ENOSPC: ("no space left on device", _FREE_SPACE),
    errno.EFBIG: ("file too large for this process's file-size limit (ulimit -f)", "Raise the limit (or write elsewhere)"),
}
if hasattr(errno, "EDQUOT"):  # not on Windows
    _WRITE_STOPPED[errno.EDQUOT] = ("disk quota exceeded", _FREE_SPACE)
# torch.save reports a short write only as its stream writer's "unexpected pos", whichever limit stopped it.
_SHORT_WRITE = (
    "the write stopped short (a full disk, a quota or a file-size limit)",
    "Free some space or raise the limit (or write elsewhere)",
)
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust) reports the OS's error
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where a link is looked for before opening
_NON_BLOCKING = getattr(os, "O_NONBLOCK", 0)  # opening (or reading) a FIFO must not wait for a writer
REGULAR_FILE = "a file"  # what file_kind says of an ordinary file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunFolderError(RuntimeError):
    """Something about the run folder or an output path; the message is one line that says what to do."""


class RunFolderBusy(RunFolderError):
    """Another live process is writing to this run folder."""

    def __init__(self, message: str, holder: LockHolder | None):
        super().__init__(message)
        self.holder = holder


class ExistingRun(FileExistsError):
    """A new run asked for in a folder that already holds one; the message says how to continue it instead."""


class NoRunToResume(FileNotFoundError):
    """A resume asked for in a folder that holds no run; the message says how to start one there."""


class DiskFullError(RunFolderError):
    """The disk, the user's quota or the process's file-size limit stopped atomic_write; the file under the real name is untouched.

    A RunFolderError rather than an OSError, so that code retrying on OSError
    does not swallow it; the original OSError is its ``__cause__``.
    """


class NotWritableError(RunFolderError):
    """An output path that cannot be written, found before any work was done."""


# ----------------------------------------------------------------------------- files


def _kind_of_mode(mode: int) -> str:
    for is_kind, words in (
        (stat.S_ISREG, REGULAR_FILE),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if is_kind(mode):
            return words
    return "a device"


def file_kind(path: str | Path, follow_symlinks: bool = True) -> str | None:
    """What is at ``path``, in words: "a file" (``REGULAR_FILE``: an ordinary one), "a folder", "a symbolic link"
    (only when not following links), "a FIFO (named pipe)", "a socket" or "a device"; None when nothing is there."""
    try:
        mode = os.stat(path, follow_symlinks=follow_symlinks).st_mode
    except FileNotFoundError:
        return None
    return _kind_of_mode(mode)


def _not_a_file(path: Path, kind: str, role: str) -> RunFolderError:
    return RunFolderError(f"{path} is {kind}, not {role}; nothing was written through it. Move it away (or delete it) and run again")


def open_own_file(path: Path, flags: int, role: str) -> int:
    """``os.open`` of a file this project writes (``role`` says which), never through a link; a link, a folder,
    a FIFO, a device or a second name of another file (a hard link) at ``path`` is refused in one line."""
    if not _NO_FOLLOW and os.path.islink(path):
        raise _not_a_file(path, "a symbolic link", role)
    try:
        fd = os.open(path, flags | _NO_FOLLOW | _NON_BLOCKING, 0o644)
    except OSError as exc:
        kind = file_kind(path, follow_symlinks=False)
        if kind not in (None, REGULAR_FILE):  # ELOOP for a link, EISDIR for a folder, ENXIO for some FIFOs
            raise _not_a_file(path, kind, role) from exc
        raise
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink > 1:
        os.close(fd)
        raise _not_a_file(path, _kind_of_mode(found.st_mode) if not stat.S_ISREG(found.st_mode) else "a hard link to another file", role)
    return fd


def new_file_mode() -> int:
    """The permissions ``open`` gives a new file here (0o666 less the umask): those of a run folder's other files."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _why_the_write_stopped(exc: BaseException | None) -> tuple[str, str] | None:
    """(what happened, what to do) when ``exc``, or what it was raised from, says the disk stopped a write; else None.

    Writers wrap the OS's error differently: an OSError (PIL, numpy, csv), a SafetensorError whose text
    ends in "(os error 28)", or torch.save's RuntimeError "unexpected pos", which names no cause at all.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_STOPPED:
            return _WRITE_STOPPED[exc.errno]
        text = str(exc)
        if (code := _RUST_OS_ERROR.search(text)) and int(code.group(1)) in _WRITE_STOPPED:
            return _WRITE_STOPPED[int(code.group(1))]
        if isinstance(exc, RuntimeError) and "unexpected pos" in text:
            return _SHORT_WRITE
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full(path: Path, reason: tuple[str, str]) -> DiskFullError:
    what, to_do = reason
    before = f"the previous {path.name} is intact" if os.path.lexists(path) else "nothing was written"
    return DiskFullError(f"{what} while writing {path}; {before}. {to_do} and run again")


# ----------------------------------------------------------------------------- locking


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a run folder's lock, as written into the lock file."""

    pid: int
    host: str
    command: str
    started: str

    @classmethod
    def of_this_process(cls) -> LockHolder:
        command = " ".join(" ".join(sys.argv).split())  # on one line, as the busy message must be
        return cls(os.getpid(), socket.gethostname(), command, time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        try:
            fields = json.loads(text)
            return cls(int(fields["pid"]), str(fields["host"]), str(fields["command"]), str(fields["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command, "started": self.started})

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}"


def _try_lock(fd: int) -> bool:
    """Take the lock without waiting; False if another process has it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", None)):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64 * 1024).decode("utf-8", errors="replace").strip()


def _still_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder deletes it)."""
    try:
        on_disk, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


class RunLock:
    """``with RunLock(out_dir):`` makes this process the only writer of ``out_dir`` (created if missing).

    The lock is an OS advisory lock on ``out_dir/.lock`` (``fcntl.flock``; on
    Windows ``msvcrt.locking``). The OS drops it when its process dies, however
    it dies, so a crashed run never blocks the next one: its leftover lock file
    is simply taken over, and ``stale_holder``/``note`` say so.
    A second writer gets ``RunFolderBusy`` naming the live holder.

    The lock file is deleted on a clean release, so a lock file that is there
    without a live holder always means a run that ended without cleaning up.
    Advisory locks on network file systems (NFS, SMB) are only as reliable as
    the server makes them; where the file system has no locks at all, the run
    goes on unguarded (``unguarded`` is True and ``note`` says so) rather than
    not at all.
    """

    def __init__(self, out_dir: str | Path):
        self.folder = Path(out_dir)
        self.path = self.folder / LOCK_NAME
        self.stale_holder: LockHolder | None = None  # the dead previous holder, when its lock was taken over
        self.took_over = False  # a leftover lock file was found, even if unreadable
        self.unguarded = False  # the file system has no locks: a second writer would not be stopped
        self._fd: int | None = None

    @property
    def note(self) -> str | None:
        """One line to show the user when something about the lock is unusual, else None."""
        who = f"a previous run ({self.stale_holder.describe()})" if self.stale_holder else "a previous run"
        if self.unguarded:
            found = f"; the lock file of {who} was found and replaced" if self.took_over else ""
            return f"the file system of {self.folder} does not support locks, so a second run writing there at the same time would not be stopped{found}"
        if self.took_over:
            return f"{who} ended without cleaning up; its lock on {self.folder} was taken over"
        return None

    def __enter__(self) -> RunLock:
        if self._fd is not None:
            raise RunFolderError(f"this RunLock on {self.folder} is already held; use a new RunLock for a new run")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT, "the run folder's lock file")
            try:
                if not self._lock_or_go_unguarded(fd):
                    raise self._busy(_read_text(fd))
                if _still_at(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            # The holder released and deleted the file between our open and our lock: start again
            # on the file now at that path, or two writers would each lock a different file.
            os.close(fd)
        try:
            leftover = _read_text(fd)
            self.took_over = bool(leftover)
            self.stale_holder = LockHolder.parse(leftover) if leftover else None
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, LockHolder.of_this_process().to_json().encode())
        except BaseException as exc:
            os.close(fd)  # closing releases the lock
            if (reason := _why_the_write_stopped(exc)) is not None:
                raise _disk_full(self.path, reason) from exc
            raise
        self._fd = fd
        return self

    def _lock_or_go_unguarded(self, fd: int) -> bool:
        try:
            return _try_lock(fd)
        except OSError as exc:
            if exc.errno not in _LOCKS_UNSUPPORTED:
                raise
            self.unguarded = True
            return True

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Give the folder up (``with`` does this, also on errors and Ctrl-C); harmless when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                # Delete while still holding the lock, so nobody locks the file just before it goes.
                self.path.unlink(missing_ok=True)
            else:
                # Windows cannot delete it yet (it is open); empty it so the next holder sees a clean release.
                os.ftruncate(fd, 0)
            if not self.unguarded:
                _unlock(fd)
        finally:
            os.close(fd)
        if fcntl is None:
            # Windows cannot delete an open file: after closing, and only if no one else opened it
            with contextlib.suppress(PermissionError):
                self.path.unlink(missing_ok=True)

    def _busy(self, text: str) -> RunFolderBusy:
        holder = LockHolder.parse(text)
        if holder is None:
            who = "another process (it is just starting)"
        elif holder.pid == os.getpid() and holder.host == socket.gethostname():
            who = f"this same process (pid {holder.pid}, since {holder.started}: an earlier run in this session has not finished)"
        else:
            who = f"another run ({holder.describe()}: {holder.command[:120]})"
        return RunFolderBusy(
            f"{self.folder} is in use by {who}; wait for it to finish, or write to another run folder (--out / out_dir)",
            holder,
        )


# ----------------------------------------------------------------------------- writing


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` survive a power cut; only possible (and needed) on POSIX."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself has happened
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` all at once: ``write(tmp)`` fills a temporary file beside it, which then replaces it.

    ``write`` receives the temporary path (a Path; pass ``str(tmp)`` to writers
    that need a string, such as safetensors' ``save_file``): a file made here
    with O_EXCL under a name no one can have chosen in advance
    (``.<stem>.tmp-<pid>-<random><suffix>``; the suffix last, as PIL and
    matplotlib pick the format by it and numpy appends ".npz" to a name that
    does not end in it), which ``write`` may fill or replace. On any failure,
    Ctrl-C included, the temporary file is removed and ``path`` is exactly as
    before. A full disk or quota, or the file-size limit, however the writer
    reports it, becomes ``DiskFullError``; a temporary file that is no longer a
    plain file when ``write`` returns (a link put there meanwhile) is refused;
    other errors pass through unchanged. Whatever is at ``path`` (a link
    included) is replaced, never written through. Returns ``path``.
    """
    path = Path(path)
    if file_kind(path, follow_symlinks=False) == "a folder":
        raise RunFolderError(f"cannot write {path}: it is a folder; move it away or choose another name")
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-{os.getpid()}-", suffix=path.suffix, dir=path.parent)
        tmp = Path(name)
        try:
            if hasattr(os, "fchmod"):  # mkstemp makes the file private; give it the mode any new file gets
                os.fchmod(fd, new_file_mode())
        finally:
            os.close(fd)
        write(tmp)
        fd = open_own_file(tmp, os.O_RDWR, f"the temporary file written for {path.name}")
        try:
            os.fsync(fd)  # the bytes must be on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a link put there is removed itself, never what it points to
        if (reason := _why_the_write_stopped(exc)) is not None:
            raise _disk_full(path, reason) from exc
        raise
    _fsync_folder(path.parent)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files interrupted writes left in ``folder``; return them.

    Only names of temporary files (``TEMPORARY_PATTERN``, or the older ``checkpoint.pt.tmp``)
    are touched, and only directly in ``folder``; a folder of such a name is left alone, and a
    link of such a name is removed itself, never followed.
    Call it while holding the folder's RunLock: then no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in os.scandir(folder):
        is_temporary = TEMPORARY_PATTERN.match(entry.name) or entry.name in LEGACY_TEMPORARIES
        if is_temporary and not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return sorted(removed)


def check_writable(path: str | Path) -> Path:
    """Refuse early, in one line, an output file that could not be written; return its folder.

    The folder may not exist yet: then the nearest existing folder above it
    must be writable, so that it can be created. Nothing is created or left
    behind (a probe file is made and removed). For a run folder, pass a file
    inside it, e.g. ``out_dir / "checkpoint.pt"``.
    """
    path = Path(path)
    if path.is_dir():
        raise NotWritableError(f"cannot write {path}: it is a folder; give a file name inside it")
    folder = path.parent
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise NotWritableError(f"cannot write {path}: {existing} is a broken link; remove it or choose another path")
        existing = existing.parent
    if not existing.is_dir():
        raise NotWritableError(f"cannot write {path}: {existing} is a file, not a folder; move that file or choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    except OSError as exc:
        reason = {
            errno.EACCES: "no permission to write in",
            errno.EPERM: "no permission to write in",
            errno.EROFS: "read-only file system at",
        }.get(exc.errno, f"{exc.strerror or type(exc).__name__} in")
        raise NotWritableError(f"cannot write {path}: {reason} {existing}; choose another path") from exc
    os.close(fd)
    os.unlink(probe)
    return folder


# ----------------------------------------------------------------------------- resuming


def config_differences(saved: dict, requested: dict, may_change=("epochs",), ignore=MACHINE_SETTINGS) -> list[str]:
    """One line per setting in which ``requested`` differs from the ``saved`` (checkpoint) config.

    Both are ``dataclasses.asdict`` of a TrainConfig; nested dicts are compared
    key by key and reported as ``model.channels``; lists and tuples with equal
    items are equal. ``may_change`` are the settings one changes on purpose
    when resuming (that ``epochs`` only grows is for the caller to check);
    ``ignore`` those of the machine or of where files live. Both take dotted
    names too (``"model.attention"``). A key on one side only is a difference.
    """
    skip = set(may_change) | set(ignore)
    differences: list[str] = []
    _compare(_as_lists(saved), _as_lists(requested), "", skip, differences)
    return differences


def _compare(saved: dict, requested: dict, prefix: str, skip: set, out: list[str]) -> None:
    for key in [*saved, *(k for k in requested if k not in saved)]:
        name = prefix + str(key)
        if name in skip:
            continue
        if key not in requested:
            out.append(f"{name}: checkpoint {saved[key]!r}, missing from the request")
        elif key not in saved:
            out.append(f"{name}: missing from the checkpoint, requested {requested[key]!r}")
        elif isinstance(saved[key], dict) and isinstance(requested[key], dict):
            _compare(saved[key], requested[key], name + ".", skip, out)
        elif saved[key] != requested[key]:
            out.append(f"{name}: checkpoint {saved[key]!r}, requested {requested[key]!r}")


def _as_lists(value):
    """The same value with every tuple a list: asdict keeps tuples, a checkpoint may hold lists."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def set_aside(out_dir: str | Path) -> Path | None:
    """Rename an existing run folder to ``<name>.previous-K`` (the first free K), so that a fresh run
    can take its place and nothing is lost; returns the new name, or None if there was nothing there."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return None
    k = 1
    while (target := out_dir.with_name(f"{out_dir.name}.previous-{k}")).exists():
        k += 1
    with RunLock(out_dir):  # not while another process writes it
        pass
    out_dir.rename(target)
    return target
