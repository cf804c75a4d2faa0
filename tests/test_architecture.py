"""The library's modules in dependency order: each may import only modules above it (README, Layout)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ddpm_lib"
ORDER = [
    "schedule", "unet", "device", "objective", "data", "runfolder", "pretrained", "config", "params", "checkpoint",
    "sampling", "plots", "trainer", "metrics", "evaluation", "exercises", "widgets", "bench", "cli", "links", "__main__",
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
