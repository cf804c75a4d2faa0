"""The run folder's guards: one writer at a time, no half-written files, and early one-line refusals."""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_lib import REPO_ROOT, runfolder
from ddpm_lib.runfolder import (
    LOCK_NAME,
    MACHINE_SETTINGS,
    DiskFullError,
    NotWritableError,
    RunFolderBusy,
    RunFolderError,
    RunLock,
    atomic_write,
    check_writable,
    config_differences,
    remove_stale_temporaries,
    set_aside,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX processes, signals and flock")

# A second process that takes the lock, says so, and waits to be killed.
HOLD_LOCK = """
import sys, time
from ddpm_lib.runfolder import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def lock_holder():
    started = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
        started.append(process)
        assert process.stdout.readline().strip() == "locked", "the helper process could not take the lock"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


@posix_only
def test_a_second_writer_is_refused_naming_the_first(tmp_path, lock_holder):
    holder = lock_holder(tmp_path / "run")
    with pytest.raises(RunFolderBusy) as refused, RunLock(tmp_path / "run"):
        pytest.fail("two writers held the same run folder")
    message = str(refused.value)
    assert f"pid {holder.pid}" in message and "\n" not in message
    assert "another run folder" in message and str(tmp_path / "run") in message
    assert refused.value.holder.pid == holder.pid


@posix_only
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, lock_holder):
    holder = lock_holder(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists(), "a killed process cannot have cleaned up"

    with RunLock(tmp_path / "run") as lock:
        assert lock.stale_holder is not None and lock.stale_holder.pid == holder.pid
        assert f"pid {holder.pid}" in lock.note and "taken over" in lock.note
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_cleanly_released_lock_leaves_nothing_to_take_over(tmp_path):
    with RunLock(tmp_path / "run") as first:
        assert first.stale_holder is None and first.note is None
        assert (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with RunLock(tmp_path / "run") as second:
        assert second.note is None


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_on_errors_and_ctrl_c(tmp_path, interruption):
    with pytest.raises(interruption), RunLock(tmp_path / "run"):
        raise interruption()
    with RunLock(tmp_path / "run") as again:
        assert again.note is None


def test_the_same_process_cannot_write_one_folder_twice(tmp_path):
    # A notebook kernel re-running a training cell while an earlier run still holds the folder.
    with RunLock(tmp_path / "run"), pytest.raises(RunFolderBusy, match="this same process"), RunLock(tmp_path / "run"):
        pass


@posix_only
def test_a_lock_file_deleted_before_it_was_locked_is_not_trusted(tmp_path, monkeypatch):
    # A holder that releases between our open() and our lock deletes the file we opened. Holding
    # that orphan would let the next writer create and lock a fresh file: two writers at once.
    real_try_lock = runfolder._try_lock
    releases = []

    def holder_releases_in_between(fd):
        if not releases:
            releases.append((tmp_path / "run" / LOCK_NAME).unlink())
        return real_try_lock(fd)

    monkeypatch.setattr(runfolder, "_try_lock", holder_releases_in_between)
    with RunLock(tmp_path / "run"):
        monkeypatch.setattr(runfolder, "_try_lock", real_try_lock)
        with pytest.raises(RunFolderBusy), RunLock(tmp_path / "run"):
            pass
    assert releases, "the release was not imitated"


@posix_only
def test_a_file_system_without_locks_lets_the_run_go_on_and_says_so(tmp_path, monkeypatch):
    def no_locks_here(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runfolder.fcntl, "flock", no_locks_here)
    with RunLock(tmp_path / "run") as lock:
        assert lock.unguarded and "does not support locks" in lock.note
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("old")
    assert atomic_write(target, lambda tmp: tmp.write_text("new")) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_writers_that_go_by_the_file_extension_still_work(tmp_path):
    import numpy as np
    from PIL import Image

    atomic_write(tmp_path / "samples.npz", lambda tmp: np.savez_compressed(tmp, images=np.zeros((2, 28, 28), np.uint8)))
    atomic_write(tmp_path / "grid.png", lambda tmp: Image.new("L", (28, 28)).save(tmp))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "samples.npz"]
    assert np.load(tmp_path / "samples.npz")["images"].shape == (2, 28, 28)


def write_then_fill_the_disk(tmp: Path):
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"epoch 3")
    with pytest.raises(DiskFullError) as full:
        atomic_write(target, write_then_fill_the_disk)
    assert str(full.value).startswith(f"no space left on device while writing {target}; the previous checkpoint.pt is intact")
    assert "\n" not in str(full.value)
    assert full.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == b"epoch 3"
    assert list(tmp_path.iterdir()) == [target], "the temporary file was left behind"


def test_a_full_disk_on_a_first_write_says_nothing_was_written(tmp_path):
    with pytest.raises(DiskFullError, match="nothing was written"):
        atomic_write(tmp_path / "ema.safetensors", write_then_fill_the_disk)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [ValueError("bad tensor"), OSError(errno.EIO, "I/O error"), KeyboardInterrupt()])
def test_other_failures_pass_through_and_change_nothing(tmp_path, failure):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"epoch 3")

    def write_then_fail(tmp: Path):
        tmp.write_bytes(b"half")
        raise failure

    with pytest.raises(type(failure)) as raised:
        atomic_write(target, write_then_fail)
    assert raised.value is failure
    assert target.read_bytes() == b"epoch 3" and list(tmp_path.iterdir()) == [target]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    names_used = []

    def remember_the_name_then_fail(tmp: Path):
        names_used.append(tmp.name)
        raise ValueError

    with pytest.raises(ValueError):
        atomic_write(tmp_path / "loss_history.csv", remember_the_name_then_fail)
    # What a process killed inside atomic_write leaves: its temporary, under the name it used.
    leftovers = [*names_used, ".ema.tmp-17.safetensors", ".checkpoint.tmp-4242.pt", "checkpoint.pt.tmp"]
    keep = ["checkpoint.pt", "epoch_001.png", "notes.tmp", ".checkpoint.tmp-x.pt", "checkpoint.pt.tmp.bak", LOCK_NAME]
    for name in leftovers + keep:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".grid.tmp-99.png").mkdir()  # a folder is never a temporary of ours
    keep.append(".grid.tmp-99.png")

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "not-there") == []


SAVED = {
    "epochs": 3, "lr": 0.002, "seed": 0, "device": "cuda", "amp": "bf16", "out_dir": "/content/drive/run", "data_root": None,
    "model": {"channels": [16, 32, 64], "attention": True, "num_classes": None},
}  # fmt: skip


def test_config_differences_reports_changed_settings_by_dotted_name():
    requested = {**SAVED, "lr": 0.001, "model": {**SAVED["model"], "channels": (32, 64, 128)}}
    assert config_differences(SAVED, requested) == [
        "lr: checkpoint 0.002, requested 0.001",
        "model.channels: checkpoint [16, 32, 64], requested [32, 64, 128]",
    ]


def test_config_differences_ignores_tuples_epochs_and_the_machine():
    requested = {
        **SAVED, "epochs": 10, "device": "cpu", "amp": "fp32", "out_dir": "runs/moved", "data_root": "/data",
        "model": {**SAVED["model"], "channels": (16, 32, 64)},
    }  # fmt: skip
    assert config_differences(SAVED, requested) == []
    assert config_differences(SAVED, requested, may_change=()) == ["epochs: checkpoint 3, requested 10"]
    assert config_differences(SAVED, {**requested, "seed": 1}, ignore=(*MACHINE_SETTINGS, "seed")) == []
    no_attention = {**requested, "model": {**SAVED["model"], "attention": False}}
    assert config_differences(SAVED, no_attention) == ["model.attention: checkpoint True, requested False"]
    assert config_differences(SAVED, no_attention, ignore=(*MACHINE_SETTINGS, "model.attention")) == []


def test_config_differences_names_the_side_that_lacks_a_key():
    older = {k: v for k, v in SAVED.items() if k != "seed"}
    newer = {**SAVED, "model": {**SAVED["model"], "dropout": 0.1}}
    assert config_differences(older, SAVED) == ["seed: missing from the checkpoint, requested 0"]
    assert config_differences(newer, SAVED) == ["model.dropout: checkpoint 0.1, missing from the request"]


def test_check_writable_accepts_a_folder_still_to_be_made(tmp_path):
    target = tmp_path / "new" / "deeper" / "grid.png"
    assert check_writable(target) == target.parent
    assert list(tmp_path.iterdir()) == [], "the check must not create or leave anything"


def test_check_writable_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(NotWritableError) as refused:
        check_writable(tmp_path / "runs" / "train" / "checkpoint.pt")
    assert str(refused.value) == (
        f"cannot write {tmp_path / 'runs' / 'train' / 'checkpoint.pt'}: {tmp_path / 'runs'} is a file, not a folder; "
        f"move that file or choose another path"
    )


def test_check_writable_refuses_a_folder_given_as_the_file(tmp_path):
    with pytest.raises(NotWritableError, match="it is a folder"):
        check_writable(tmp_path)


def test_check_writable_refuses_a_read_only_folder(tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root (or on a file system that ignores modes): a read-only folder is still writable")
        with pytest.raises(NotWritableError, match=f"no permission to write in {locked}"):
            check_writable(locked / "sub" / "grid.png")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "no permission to write in"), (errno.EROFS, "read-only file system at")])
def test_check_writable_names_why_the_probe_failed(tmp_path, monkeypatch, code, reason):
    # Root writes through folder modes and tests cannot mount a read-only disk, so the OS's answer is imitated.
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("ddpm_lib.runfolder.tempfile.mkstemp", refuse)
    with pytest.raises(NotWritableError) as refused:
        check_writable(tmp_path / "grid.png")
    assert str(refused.value) == f"cannot write {tmp_path / 'grid.png'}: {reason} {tmp_path}; choose another path"


# ----------------------------------------------------------------------------- a fresh run where an old one was


def test_set_aside_keeps_every_earlier_run_beside_the_new_one(tmp_path):
    # Notebook 02 does this unless resume=True: `make run` after `make test` trains afresh, and nothing is lost.
    run = tmp_path / "02_training"
    assert set_aside(run) is None
    for attempt in (1, 2):
        run.mkdir()
        (run / "checkpoint.pt").write_text(f"attempt {attempt}")
        assert set_aside(run) == tmp_path / f"02_training.previous-{attempt}"
        assert not run.exists()
    assert (tmp_path / "02_training.previous-1" / "checkpoint.pt").read_text() == "attempt 1"
    assert not (tmp_path / "02_training.previous-2" / LOCK_NAME).exists()


def test_set_aside_leaves_a_run_that_is_still_being_written(tmp_path):
    run = tmp_path / "02_training"
    with RunLock(run), pytest.raises(RunFolderBusy):
        set_aside(run)
    assert run.is_dir() and not (tmp_path / "02_training.previous-1").exists()


# ----------------------------------------------------------------------------- nothing written through a link


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the run folder that a planted link points at: it must stay byte for byte as it is."""
    path = tmp_path / "elsewhere" / "notes.txt"
    path.parent.mkdir()
    path.write_bytes(b"the owner's notes\n")
    return path


@contextlib.contextmanager
def must_not_hang(seconds: int = 10):
    """Fail instead of waiting forever (a FIFO opened for reading waits for a writer)."""

    def give_up(*_):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def plant(path: Path, kind: str, victim: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symbolic link":
        path.symlink_to(victim)
    elif kind == "hard link":
        os.link(victim, path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@posix_only
@pytest.mark.parametrize("kind", ["symbolic link", "hard link", "folder", "FIFO"])
def test_a_lock_that_is_not_a_plain_file_is_refused_in_one_line(tmp_path, victim, kind):
    run = tmp_path / "run"
    plant(run / LOCK_NAME, kind, victim)
    with must_not_hang(), pytest.raises(RunFolderError) as refused, RunLock(run):
        pytest.fail("the run went on with a planted lock")
    message = str(refused.value)
    assert message.startswith(f"{run / LOCK_NAME} is a {kind.split()[0] if kind == 'FIFO' else kind}") and "\n" not in message
    assert "not the run folder's lock file" in message and "Move it away" in message
    assert victim.read_bytes() == b"the owner's notes\n"


@posix_only
def test_train_into_a_folder_with_a_planted_lock_link_leaves_its_target_alone(tmp_path, victim, cli):
    # The reproduction: a run folder handed over with .lock pointing at a file of its new owner.
    run = tmp_path / "R"
    plant(run / LOCK_NAME, "symbolic link", victim)
    result = cli("train", "--subset", 256, "--batch-size", 64, "--epochs", 1, "--quiet", "--out", run)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "is a symbolic link" in result.stderr
    assert victim.read_bytes() == b"the owner's notes\n"
    assert (run / LOCK_NAME).is_symlink() and not (run / "checkpoint.pt").exists()


@posix_only
def test_set_aside_refuses_a_folder_whose_lock_is_a_link(tmp_path, victim):
    run = tmp_path / "02_training"
    plant(run / LOCK_NAME, "symbolic link", victim)
    with pytest.raises(RunFolderError, match="is a symbolic link"):
        set_aside(run)
    assert victim.read_bytes() == b"the owner's notes\n" and run.is_dir()


@posix_only
def test_atomic_write_never_writes_through_a_planted_link(tmp_path, victim, monkeypatch):
    # Links at a temporary name without the random part (".<stem>.tmp-<pid><suffix>", which TEMPORARY_PATTERN still
    # matches) and at the real name.
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    run = tmp_path / "run"
    plant(run / ".checkpoint.tmp-4242.pt", "symbolic link", victim)
    plant(run / "checkpoint.pt", "symbolic link", victim)
    atomic_write(run / "checkpoint.pt", lambda tmp: tmp.write_bytes(b"epoch 1"))
    assert victim.read_bytes() == b"the owner's notes\n"
    assert not (run / "checkpoint.pt").is_symlink() and (run / "checkpoint.pt").read_bytes() == b"epoch 1"


@posix_only
@pytest.mark.parametrize("kind", ["symbolic link", "FIFO"])
def test_a_temporary_replaced_while_it_was_written_is_refused(tmp_path, victim, kind):
    run = tmp_path / "run"
    run.mkdir()
    (run / "ema.safetensors").write_bytes(b"epoch 1")

    def swap_the_temporary(tmp: Path):
        tmp.unlink()
        plant(tmp, kind, victim)

    with must_not_hang(), pytest.raises(RunFolderError) as refused:
        atomic_write(run / "ema.safetensors", swap_the_temporary)
    assert "not the temporary file written for ema.safetensors" in str(refused.value) and "\n" not in str(refused.value)
    assert victim.read_bytes() == b"the owner's notes\n"
    assert (run / "ema.safetensors").read_bytes() == b"epoch 1" and sorted(p.name for p in run.iterdir()) == ["ema.safetensors"]


@posix_only
def test_planted_temporaries_are_removed_without_following_them(tmp_path, victim):
    run = tmp_path / "run"
    plant(run / ".checkpoint.tmp-17-abcd1234.pt", "symbolic link", victim)
    plant(run / ".ema.tmp-17.safetensors", "symbolic link", victim.parent)  # a link to a folder
    plant(run / ".tmpAb12Cd", "FIFO", victim)  # safetensors' own temporary name
    removed = remove_stale_temporaries(run)
    assert [p.name for p in removed] == [".checkpoint.tmp-17-abcd1234.pt", ".ema.tmp-17.safetensors", ".tmpAb12Cd"]
    assert list(run.iterdir()) == []
    assert victim.read_bytes() == b"the owner's notes\n" and sorted(p.name for p in victim.parent.iterdir()) == ["notes.txt"]


def test_atomic_write_refuses_a_folder_at_the_real_name(tmp_path):
    (tmp_path / "epoch_001.png").mkdir()
    with pytest.raises(RunFolderError) as refused:
        atomic_write(tmp_path / "epoch_001.png", lambda tmp: tmp.write_bytes(b"png"))
    assert str(refused.value) == f"cannot write {tmp_path / 'epoch_001.png'}: it is a folder; move it away or choose another name"
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_001.png"]


@posix_only
def test_files_written_atomically_get_the_mode_of_any_new_file(tmp_path):
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    atomic_write(tmp_path / "history.csv", lambda tmp: tmp.write_text("step,epoch,loss\n"))
    assert (tmp_path / "history.csv").stat().st_mode == ordinary.stat().st_mode


# ----------------------------------------------------------------------------- a full disk, however the writer says it


def raising(make_error):
    def write(tmp: Path):
        tmp.write_bytes(b"half")
        raise make_error()

    return write


def safetensors_error(text: str) -> Exception:
    from safetensors import SafetensorError

    return SafetensorError(text)


@pytest.mark.parametrize(
    "error, said",
    [
        # torch.save's words for a short write, whatever stopped it
        (lambda: RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
         "the write stopped short (a full disk, a quota or a file-size limit)"),
        (lambda: safetensors_error("Error while serializing: I/O error: No space left on device (os error 28)"), "no space left on device"),
        (lambda: safetensors_error("Error while serializing: I/O error: File too large (os error 27)"), "file too large"),
        (lambda: OSError(errno.EFBIG, "File too large"), "file too large for this process's file-size limit (ulimit -f)"),
        (lambda: OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    ],
)  # fmt: skip
def test_every_wrapping_of_a_full_disk_is_the_one_line(tmp_path, error, said):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"epoch 3")
    with pytest.raises(DiskFullError) as full:
        atomic_write(target, raising(error))
    assert str(full.value).startswith(f"{said}") and f"while writing {target}; the previous checkpoint.pt is intact" in str(full.value)
    assert "\n" not in str(full.value)
    assert target.read_bytes() == b"epoch 3" and list(tmp_path.iterdir()) == [target]


def test_an_error_raised_from_a_full_disk_is_the_one_line_too(tmp_path):
    def wrap_the_os_error(tmp: Path):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("the writer gave up") from exc

    with pytest.raises(DiskFullError, match=r"^no space left on device while writing .*nothing was written"):
        atomic_write(tmp_path / "grid.png", wrap_the_os_error)


# Each writer the project uses, under a real file-size limit (SIGXFSZ ignored, as Python does), after a first version fitted.
UNDER_A_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
import numpy as np, torch
from PIL import Image
from ddpm_lib.checkpoint import save_weights
from ddpm_lib.runfolder import DiskFullError, atomic_write

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
writers = {
    "checkpoint.pt": lambda big: lambda tmp: torch.save({"w": torch.zeros(big)}, tmp),
    "ema.safetensors": lambda big: lambda tmp: save_weights({"w": torch.zeros(big)}, tmp, {}),
    "epoch_001.png": lambda big: lambda tmp: Image.fromarray(np.random.default_rng(0).integers(0, 255, (big // 64, 64), np.uint8)).save(tmp),
    "digits.npz": lambda big: lambda tmp: np.savez_compressed(tmp, images=np.random.default_rng(0).random(big)),
}
for name, writer in writers.items():
    atomic_write(name, writer(64))
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
said = {}
for name, writer in writers.items():
    try:
        atomic_write(name, writer(65536))
        said[name] = "written"
    except DiskFullError as exc:
        said[name] = str(exc)
print(json.dumps(said))
"""


@posix_only
@pytest.mark.slow  # a Python of its own, with torch
def test_a_real_file_size_limit_is_the_one_line_for_every_writer(tmp_path):
    import resource  # noqa: F401  (POSIX only)

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", UNDER_A_FILE_SIZE_LIMIT], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    for name, message in said.items():
        assert f"while writing {name}; the previous {name} is intact" in message and "\n" not in message, message
        assert message.startswith(("file too large", "the write stopped short")), message
    before = {name: (tmp_path / name).stat().st_size for name in said}
    assert all(size < 16384 for size in before.values()), "the first, small versions were replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(said), "a temporary file was left behind"
