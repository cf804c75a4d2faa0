"""(Maintainers) the repository's public URL lives in one place, pyproject.toml; this keeps the rest in step.

Notebook badges ("Open in Colab"), the notebooks' Colab set-up cells and the
README all spell the URL out, because they must work before ddpm_lib is
installed. When the repository moves, run

    python tools/links.py https://github.com/OWNER/NAME

which rewrites pyproject.toml and every copy; tests/test_links.py checks they agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The line under [project.urls]; read with a pattern rather than tomllib, which Python 3.10 lacks.
REPOSITORY_LINE = re.compile(r'^Repository\s*=\s*"([^"]+)"\s*$', re.MULTILINE)
GITHUB_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+?(?=[/\"')\s]|\.git|$)")
COLAB_URL = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/")


def repository_url(root: Path = REPO_ROOT) -> str:
    found = REPOSITORY_LINE.findall((root / "pyproject.toml").read_text())
    if len(found) != 1:
        raise ValueError(f'expected one Repository = "..." line in {root / "pyproject.toml"}, found {len(found)}')
    return found[0]


def colab_prefix(url: str) -> str:
    """https://github.com/OWNER/NAME -> https://colab.research.google.com/github/OWNER/NAME/"""
    return url.replace("https://github.com/", "https://colab.research.google.com/github/") + "/"


def files_that_spell_it(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]


def rewrite(new_url: str, root: Path = REPO_ROOT) -> list[Path]:
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", new_url):
        raise ValueError(f"expected https://github.com/OWNER/NAME, got {new_url!r}")
    old_url = repository_url(root)
    old_name, new_name = old_url.rsplit("/", 1)[1], new_url.rsplit("/", 1)[1]
    changed = []
    for path in [root / "pyproject.toml", *files_that_spell_it(root)]:
        text = path.read_text()
        updated = text.replace(colab_prefix(old_url), colab_prefix(new_url)).replace(old_url, new_url)
        # The set-up cells clone into /content/NAME.
        updated = updated.replace(f"/content/{old_name}", f"/content/{new_name}")
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in rewrite(sys.argv[1]):
        print("rewrote", path.relative_to(REPO_ROOT))
