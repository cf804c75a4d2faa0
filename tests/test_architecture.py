"""The library's modules in dependency order: each may import only modules above it (README, Layout);
and every module, the maintainers' tools included, runs on the oldest Python pyproject.toml allows."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ddpm_lib"
ORDER = [
    "schedule", "mixture2d", "unet", "device", "objective", "data", "runfolder", "pretrained", "config", "params", "checkpoint",
    "sampling", "plots", "trainer", "metrics", "evaluation", "exercises", "widgets", "bench", "cli", "__main__",
]  # fmt: skip


def package_imports(path: Path) -> set[str]:
    """Modules of ddpm_lib that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
            found.update(name for name in names if (PACKAGE / f"{name}.py").exists())
    return found


def test_every_module_is_placed_in_the_order():
    assert sorted(ORDER) == sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", ORDER)
def test_a_module_imports_only_modules_above_it(module):
    above = set(ORDER[: ORDER.index(module)])
    upward = package_imports(PACKAGE / f"{module}.py") - above
    assert not upward, f"{module} imports {sorted(upward)}, which come after it: move the shared piece down instead"


FLOOR = tuple(int(part) for part in re.search(r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text()).groups())
NEWER_STANDARD_MODULES = {"tomllib": (3, 11)}  # the standard library's additions since 3.10 that this code might reach for


@pytest.mark.parametrize("path", sorted([*PACKAGE.glob("*.py"), *(ROOT / "tools").glob("*.py")]), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_module_runs_on_the_python_floor(path):
    tree = ast.parse(path.read_text(), feature_version=FLOOR)  # refuses syntax newer than the floor
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    too_new = {name for name in imported if NEWER_STANDARD_MODULES.get(name, FLOOR) > FLOOR}
    assert not too_new, f"{path.name} imports {sorted(too_new)}, which Python {FLOOR[0]}.{FLOOR[1]} lacks"
