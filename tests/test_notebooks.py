"""Static checks on the stored notebooks that nbval itself does not make."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MARKER = "# NBVAL_IGNORE_OUTPUT"


def code_cells(notebook: Path):
    return [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_ignore_markers_are_exact_and_explained(notebook):
    # nbval only honours the marker spelled exactly; "# NBVAL_IGNORE_OUTPUT: why" is silently a checked cell.
    for cell in code_cells(notebook):
        lines = "".join(cell["source"]).splitlines()
        if any("NBVAL_IGNORE_OUTPUT" in line for line in lines):
            assert lines[0] == MARKER, f"the marker must be the first line, exactly {MARKER!r}: {lines[0]!r}"
            assert len(lines) > 1 and lines[1].startswith("#"), "say on the next line why the output is not compared"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_output_scrolls(notebook):
    for cell in code_cells(notebook):
        printed = "".join("".join(out.get("text", "")) for out in cell["outputs"] if out["output_type"] == "stream")
        assert len(printed.splitlines()) <= 15, f"a cell prints {len(printed.splitlines())} lines: show, do not scroll"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_complete_and_error_free(notebook):
    cells = code_cells(notebook)
    assert all(cell["execution_count"] for cell in cells if "".join(cell["source"]).strip()), "execute the notebook before committing"
    assert not any(out["output_type"] == "error" for cell in cells for out in cell["outputs"])
