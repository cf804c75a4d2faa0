"""The library's layers (ARCHITECTURE.md): each module imports only from its own layer and the layers below it,
whether it spells the import relatively (``from .x import y``) or absolutely (``from ddpm_lib.x import y``,
``import ddpm_lib.x``, ``from ddpm_lib import x``); no two modules import each other, even through others; and
every module, the maintainers' tools included, runs on the oldest Python pyproject.toml allows."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ddpm_lib"
PACKAGE_ROOT = "__init__"  # REPO_ROOT and the version: every module may import it, and it imports none of them

# The layers, lowest first, as ARCHITECTURE.md draws them.
LAYERS = {
    "machine": {"constants", "device", "runfolder"},
    "math": {"schedule", "unet", "objective", "mixture2d"},
    "data and weights": {"data", "pretrained", "checkpoint", "config"},
    "generation and judging": {"sampling", "metrics", "evaluation", "plots"},
    "training": {"trainer"},
    "teaching and tools": {"params", "exercises", "widgets", "bench", "cli", "__main__"},
}
# Which layers a module may import from, besides its own layer and the package root.
MAY_IMPORT = {
    "machine": set(),
    "math": {"machine"},
    "data and weights": {"machine", "math"},
    "generation and judging": {"machine", "math", "data and weights"},
    "training": {"machine", "math", "data and weights", "generation and judging"},
    "teaching and tools": {"machine", "math", "data and weights", "generation and judging", "training"},
}


def package_imports(path: Path, package: str = "ddpm_lib") -> set[str]:
    """The modules of ``package`` (a folder of .py files) that the module at ``path`` imports, at the top or inside a
    function, in any spelling; ``PACKAGE_ROOT`` for what it takes from the package itself (``from . import REPO_ROOT``)."""
    folder = path.parent

    def module_of(dotted: str) -> str:
        first = dotted.split(".")[0]
        return first if (folder / f"{first}.py").exists() else PACKAGE_ROOT

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):  # import ddpm_lib, import ddpm_lib.x, import ddpm_lib.x as y
            found.update(module_of(alias.name.partition(".")[2]) for alias in node.names if alias.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            inside = node.module.partition(".")[2] if node.module and node.level == 0 else node.module
            if node.level == 1 or (node.level == 0 and node.module and node.module.split(".")[0] == package):
                if inside:  # from .x import y, from ddpm_lib.x import y
                    found.add(module_of(inside))
                else:  # from . import x, from ddpm_lib import x (x a module, or a name of the package root)
                    found.update(module_of(alias.name) for alias in node.names)
    return found


def layer_violations(folder: Path, layers: dict[str, set[str]], may_import: dict[str, set[str]], package: str = "ddpm_lib") -> list[str]:
    """Every import in the package at ``folder`` that reaches a layer its module's layer may not import from."""
    layer_of = {module: layer for layer, modules in layers.items() for module in modules}
    problems = []
    for module, layer in sorted(layer_of.items()):
        allowed = {module for name in {layer, *may_import[layer]} for module in layers[name]} | {PACKAGE_ROOT}
        for imported in sorted(package_imports(folder / f"{module}.py", package) - allowed - {module}):
            problems.append(f"{module} ({layer}) imports {imported} ({layer_of.get(imported, 'no layer')})")
    return problems


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph, as the modules along it, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported, [*path, imported])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_every_module_is_in_exactly_one_layer():
    placed = [module for modules in LAYERS.values() for module in modules]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    assert sorted(placed) == sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != PACKAGE_ROOT)


def test_no_module_imports_from_a_layer_above_its_own():
    problems = layer_violations(PACKAGE, LAYERS, MAY_IMPORT)
    assert not problems, "; ".join(problems) + ": move the shared piece down to a layer both may import"


def test_the_package_root_imports_none_of_its_modules():
    assert package_imports(PACKAGE / "__init__.py") == set()  # importing any module would load that one too


def test_no_modules_import_each_other_even_through_others():
    graph = {p.stem: package_imports(p) - {PACKAGE_ROOT} for p in PACKAGE.glob("*.py") if p.stem != PACKAGE_ROOT}
    assert import_cycle(graph) is None, f"import cycle: {' -> '.join(import_cycle(graph))}"


def test_architecture_md_draws_these_layers_and_says_what_each_module_owns():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    diagram = text.split("```")[1].splitlines()
    drawn = {layer: set(line.split(layer, 1)[1].split()) for layer in LAYERS for line in diagram if line.strip().startswith(layer)}
    assert drawn == LAYERS
    assert [module for modules in LAYERS.values() for module in modules if f"`{module}`" not in text] == []


def test_the_package_docstring_lists_every_module_in_its_layer():
    import ddpm_lib

    table = ddpm_lib.__doc__.split("\n\n")[2]  # the paragraph of modules by layer, each layer's name on its first line
    listed, layer = {}, None
    for line in table.splitlines():
        if not line.startswith(" "):
            layer = next(name for name in LAYERS if line.startswith(name))
            line = line[len(layer) :]
        listed.setdefault(layer, set()).add(line.split()[0])
    assert listed == {layer: modules - {"__main__"} for layer, modules in LAYERS.items()}


UPWARD_IMPORTS = [
    "from ddpm_lib.top import thing",
    "import ddpm_lib.top",
    "import ddpm_lib.top as top",
    "from ddpm_lib import top",
    "from .top import thing",
    "from . import top",
    "def later():\n    from ddpm_lib.top import thing",
]


@pytest.mark.parametrize("spelling", UPWARD_IMPORTS)
def test_the_check_catches_an_upward_import_in_any_spelling(spelling, tmp_path):
    package = tmp_path / "ddpm_lib"
    package.mkdir()
    (package / "__init__.py").write_text("from pathlib import Path\n")
    (package / "top.py").write_text("from ddpm_lib.bottom import helper\nthing = helper\n")
    (package / "bottom.py").write_text("from ddpm_lib import REPO_ROOT\nhelper = 1\n")
    layers, may_import = {"low": {"bottom"}, "high": {"top"}}, {"low": set(), "high": {"low"}}
    assert layer_violations(package, layers, may_import) == []  # downward, and the package root: allowed
    (package / "bottom.py").write_text(f"{spelling}\nhelper = 1\n")
    assert layer_violations(package, layers, may_import) == ["bottom (low) imports top (high)"]
    assert import_cycle({"bottom": package_imports(package / "bottom.py"), "top": package_imports(package / "top.py")}) in (
        ["bottom", "top", "bottom"],
        ["top", "bottom", "top"],
    )


def test_the_check_reads_imports_of_other_packages_as_none_of_ours(tmp_path):
    (tmp_path / "data.py").write_text("")
    module = tmp_path / "low.py"
    module.write_text("import torch.data\nfrom torchvision import data\nfrom os.path import join\n")
    assert package_imports(module) == set()


def test_importing_the_samplers_does_not_load_the_data_or_the_training_config():
    """The samplers' batch size is a shared constant (ddpm_lib.constants), not the training config's: importing them
    must not load MNIST's downloader or the config."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ddpm_lib.sampling; print(sorted(m for m in sys.modules if m.startswith('ddpm_lib')))"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    assert loaded.returncode == 0, loaded.stderr
    modules = set(ast.literal_eval(loaded.stdout))
    assert "ddpm_lib.sampling" in modules
    assert not modules & {"ddpm_lib.data", "ddpm_lib.config"}, sorted(modules)


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
