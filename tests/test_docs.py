"""The docs hold the measurements the code and README point to; a pointer must land on a section."""

import re
from pathlib import Path

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parents[1]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
# `docs/benchmarks.md, "Section"` or `docs/benchmarks.md ("Section"`, possibly wrapped across lines
# of prose or of a `#` comment.
SECTION_POINTER = re.compile(r'benchmarks\.md(?:,|\s*\()\s*"([^"]+)"')


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def _pointers() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for package in ("lwd", "tools", "tests"):
        files += [path for path in sorted((ROOT / package).rglob("*.py")) if path != THIS_FILE]
    found = []
    for path in files:
        for name in SECTION_POINTER.findall(_one_line(path.read_text(encoding="utf-8"))):
            found.append((str(path.relative_to(ROOT)), name))
    return found


def test_every_pointer_into_the_benchmarks_names_one_of_its_sections():
    # A section is a heading, or a paragraph that opens with its name in bold.
    headings = [
        line.lstrip("#*").strip()
        for line in BENCHMARKS.read_text(encoding="utf-8").splitlines()
        if line.startswith(("#", "**"))
    ]
    pointers = _pointers()
    assert len(pointers) >= 10, "the pointer pattern no longer matches how the docs cite sections"
    dangling = [(where, name) for where, name in pointers if not any(h.startswith(name) for h in headings)]
    assert not dangling, f"pointers to sections docs/benchmarks.md does not have: {dangling}"
