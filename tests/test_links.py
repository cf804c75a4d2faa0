"""Badges, Colab set-up cells and README all point at the repository URL in pyproject.toml."""

import json
import shutil

import pytest

from tools.links import COLAB_URL, GITHUB_URL, REPO_ROOT, colab_prefix, files_that_spell_it, repository_url, rewrite

URL = repository_url()
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_every_github_and_colab_link_follows_pyproject():
    for path in files_that_spell_it():
        text = path.read_text()
        assert set(GITHUB_URL.findall(text)) <= {URL}, f"{path.name} names another repository"
        assert set(COLAB_URL.findall(text)) <= {colab_prefix(URL)}, f"{path.name} has a Colab link to another repository"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_its_badge_and_the_shared_setup_cell(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert f"{colab_prefix(URL)}blob/main/notebooks/{notebook.name}" in first, "the Colab badge must open this notebook"
    setup = "".join(cells[1]["source"])
    assert f'REPO_URL = "{URL}"' in setup
    reference = "".join(json.loads(NOTEBOOKS[0].read_text())["cells"][1]["source"])
    assert setup == reference, "every notebook starts with the same set-up cell"


def test_readme_has_a_badge_for_every_notebook():
    readme = (REPO_ROOT / "README.md").read_text()
    for notebook in NOTEBOOKS:
        assert f"{colab_prefix(URL)}blob/main/notebooks/{notebook.name}" in readme, notebook.name


def test_rewrite_moves_every_copy(tmp_path):
    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    rewrite("https://github.com/someone/ddpm-fork", tmp_path)
    assert repository_url(tmp_path) == "https://github.com/someone/ddpm-fork"
    for path in files_that_spell_it(tmp_path):
        text = path.read_text()
        assert URL not in text and colab_prefix(URL) not in text, path.name
    assert "/content/ddpm-fork" in (tmp_path / "notebooks" / NOTEBOOKS[0].name).read_text()
