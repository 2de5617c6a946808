"""The design document lives in the repository, and what cites it names sections it has."""

import re
import subprocess
import sys

from conftest import ROOT

DESIGN = ROOT / "docs" / "design.md"
CITED = ("README.md", "fullspectrum", "benchmarks", "workflow_scripts", "rules", "Snakefile")


def sections() -> set[str]:
    return {line.lstrip("#").strip() for line in DESIGN.read_text().splitlines() if line.startswith("#")}


def citing_files():
    for name in CITED:
        path = ROOT / name
        yield from ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".smk")))


def test_every_section_the_code_cites_exists():
    cited = {}
    for path in citing_files():
        text = path.read_text()
        for section in re.findall(r"docs/design\.md[`)]*,\s*(?:section\s*)?[\"']([^\"']+)[\"']", text):
            cited.setdefault(section, []).append(path.name)
    assert {"Layer graph", "PaI methods"} <= set(cited)
    missing = {section: files for section, files in cited.items() if section not in sections()}
    assert not missing


def test_the_design_covers_what_the_readme_promises():
    have = sections()
    for section in ("Layer graph", "The metrics", "PaI methods", "PAGS and PEGS: the mask search",
                    "The authors' protocol (the paper grid, `config.yaml`)", "The readout of a cell",
                    "The statistics"):
        assert section in have


def test_metrics_help_points_to_the_design():
    result = subprocess.run([sys.executable, "-m", "fullspectrum", "metrics", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True)
    assert "docs/design.md" in " ".join(result.stdout.split())
