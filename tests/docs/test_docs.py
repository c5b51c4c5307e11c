"""The docs fit their reader and stay true: a short README, every setting documented, every link
resolving, and code comments that say what and why rather than which issue brought them."""

from __future__ import annotations

import re
from pathlib import Path

from domain.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 250
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
ISSUE_REFERENCE = re.compile(r"\bissues? #?\d+", re.I)
CODE_PACKAGES = ("api", "bench", "cli", "domain", "migrations", "orchestration_defs", "resources", "schedules")
CODE_PACKAGES += ("scripts", "sensors", "tests")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = CODE_BLOCK.sub("", page.read_text())
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


def test_every_setting_is_in_the_settings_reference():
    reference = (DOCS / "settings.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in reference]
    assert missing == []


def test_the_readme_leads_to_an_index_of_every_page_and_every_link_resolves():
    readme, index = (ROOT / "README.md").read_text(), (DOCS / "README.md").read_text()
    assert "(docs/README.md)" in readme
    assert [page.name for page in DOCS.glob("*.md") if page.name != "README.md" and f"({page.name})" not in index] == []
    broken = []
    for page in _pages():
        for target in LINK.findall(CODE_BLOCK.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_no_comment_or_docstring_names_an_issue():
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in CODE_PACKAGES
        for path in sorted((ROOT / package).rglob("*"))
        if path.is_file()
        and (path.suffix == ".py" or path.parent.name == "scripts")
        and "node_modules" not in path.parts  # a bench peer's installed packages (bench/peers/)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if ISSUE_REFERENCE.search(line)
    ]
    assert found == []
