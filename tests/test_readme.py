"""The README a user reads in ten minutes, and the pages it links to, cannot drift from the code and the results.

Its tables are the ones the benchmarks write from their JSON records (regenerated here and compared), every
percentage in its prose stands in a results file, and every relative link resolves.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from types import SimpleNamespace

import pytest

from .conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
RESULTS = REPO / "benchmarks" / "results"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def sections(text: str) -> dict[str, str]:
    """{name: content} of every `<!-- bench:NAME:begin -->` ... `<!-- bench:NAME:end -->` section."""
    found = re.findall(r"<!-- bench:([\w-]+):begin -->\n(.*?)\n<!-- bench:\1:end -->", text, re.S)
    return dict(found)


def test_the_readme_reads_in_ten_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    headings = [line for line in lines if line.startswith("## ")]
    for needed in ("Quick start", "Python API", "Command line", "Hugging Face workflow", "Supported models"):
        assert f"## {needed}" in headings
    assert "make demo" in README.read_text() and 'pytest -m "not slow"' in README.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_headline_table_is_the_one_compare_writes_from_its_runs(tmp_path):
    compare = _bench("compare")
    args = SimpleNamespace(teacher="resnet34-fmnist", results=str(RESULTS), cache=str(tmp_path), command=None)
    bench = compare.Bench(args)
    _, groups, settings = bench.grouped_runs()
    expected = "\n".join(bench.headline(groups, bench.page_settings(settings)))
    assert ("fmnist", 500, 0.5) in bench.page_settings(settings)
    for page in (README, REPO / "docs" / "results.md"):
        assert sections(page.read_text())["resnet34-fmnist"] == expected, page


def test_the_results_page_families_table_is_the_one_families_writes():
    import json

    families = _bench("families")
    records = json.loads((RESULTS / "families.json").read_text())
    assert sections((REPO / "docs" / "results.md").read_text())["families"] == "\n".join(families.headline(records))


def test_every_percentage_in_the_readme_prose_stands_in_a_results_file():
    text = README.read_text()
    for body in sections(text).values():
        text = text.replace(body, "")  # the tables are checked against their generators above
    results = "\n".join(p.read_text() for p in RESULTS.rglob("*") if p.suffix in (".md", ".json"))
    for number in sorted(set(re.findall(r"\d[\d,.]*%", text))):
        assert number in results, f"README says {number}, which no file in benchmarks/results holds"
