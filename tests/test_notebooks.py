"""Static checks on the stored notebooks that nbval itself does not make."""

import json
import re
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
            assert len(lines) < 3 or not lines[2].startswith("#"), f"the reason fits on one line: {lines[1]!r} goes on"


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


# The main path a student reads: the markdown outside collapsed <details> blocks (derivations, "how this was
# measured", solutions), counted in words. A course that is short on the page is read to the end.
MAIN_PATH_WORDS = {"01": 1500, "02": 2500, "03": 2500, "04": 2500}
README_WORDS = 1500
COLLAPSED = re.compile(r"<details>.*?</details>", re.DOTALL | re.IGNORECASE)


def main_path_words(markdown: str) -> int:
    return len(COLLAPSED.sub(" ", markdown).split())


def test_collapsed_blocks_are_left_out_of_the_count():
    assert main_path_words("one two <details><summary>Proof</summary>\n\nthree four\n</details> five") == 3


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_main_path_is_within_its_word_budget(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    words = main_path_words("\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"))
    budget = MAIN_PATH_WORDS[notebook.name[:2]]
    assert words <= budget, f"{notebook.name}: {words} words of markdown outside <details> blocks, budget {budget}"


def test_readme_is_within_its_word_budget():
    words = len((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert words <= README_WORDS, f"README.md: {words} words, budget {README_WORDS}; measurement records belong in assets/measurements/"
