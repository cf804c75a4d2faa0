"""The run folder's guards: one writer at a time, no half-written files, and early one-line refusals."""

import errno
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
