"""(Maintainers) put trained weights into assets/ and record their sha256 in the manifest.

    python tools/ship.py unconditional runs/gpu/unconditional/ema.safetensors

The notebooks and the CLI load shipped weights only through the manifest, which
pins each file's sha256; the model cards say how each file was trained.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ddpm_lib.checkpoint import read_weights
from ddpm_lib.pretrained import ASSETS, MANIFEST, manifest, sha256_of


def ship(name: str, weights: Path) -> dict:
    """Copy ``weights`` to assets/ as ``ddpm_mnist_{name}.safetensors`` and record it in the manifest."""
    read_weights(weights)  # refuse anything that is not a weights file of ours
    target = ASSETS / f"ddpm_mnist_{name}.safetensors"
    shutil.copyfile(weights, target)
    entries = manifest()
    entries[name] = {"file": target.name, "sha256": sha256_of(target)}
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries[name]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    entry = ship(sys.argv[1], Path(sys.argv[2]))
    print(f"assets/{entry['file']}  sha256 {entry['sha256']}")
