"""The report's landing page: built from any config and its results folder, valid reStructuredText."""

import pytest
from docutils.core import publish_parts
from docutils.utils import Reporter

from fullspectrum import landing
from fullspectrum.plan import merged_config

from conftest import ROOT
from test_summary import write_tables


def render(text: str) -> str:
    """HTML of the page; any docutils warning fails (a broken table would otherwise render as an error box)."""
    return publish_parts(text, writer="html",
                         settings_overrides={"halt_level": Reporter.WARNING_LEVEL, "report_level": 5})["html_body"]


@pytest.mark.parametrize("configs", [["embedded.yaml"], ["test_workflow.yaml"], []], ids=["embedded", "test", "paper"])
def test_the_page_states_what_ran_and_renders(tmp_path, configs):
    config = merged_config([str(ROOT / "config" / name) for name in configs])
    write_tables(tmp_path, list(config["tables"])[:2], seeds=5)  # one table not made yet
    text = landing.landing_page(config, tmp_path)
    assert "{{" not in text and "{%" not in text  # Snakemake renders the page through Jinja
    html = render(text)
    for heading in ("What ran", "Verdicts", "How to read the tables", "Comparable with the paper?"):
        assert heading in html
    width = f"width {config['model_width']}"
    assert width in html and f"{config['train']['epochs']} epochs" in html
    names = list(config["tables"])
    assert f"<td>{names[0]}</td>" in html and f"Not made yet: {names[2]}." in html
    assert "above 0 in 1/2, below in 1/2" in html and ">seeds &gt; 0</th>" in html
    if configs:
        assert "<strong>No.</strong>" in html and "not comparable with the paper" in html
    else:  # config.yaml: CIFAR at width 64 and density 0.01, paper tables named
        assert "CIFAR-100" in html and "paper's reported number" in html and "<strong>No.</strong>" not in html
        assert "3,000 candidates, a snapshot every 10" in html


def test_the_settings_name_data_models_density_search_and_seeds():
    config = merged_config([str(ROOT / "config" / "embedded.yaml")])
    rows = dict((key, value) for key, value in landing.settings_rows(config))
    assert "handwritten digits" in rows["data"] and rows["density"].startswith("0.2")
    assert rows["models"].startswith("ResNet18, ResNet34 at width 8")
    assert rows["seeds"].startswith("0, 1") and "control" in rows["search (PAGS/PEGS)"]
    assert rows["baselines"].startswith("Early-Bird, LTH")


def test_extra_sections_are_appended(tmp_path):
    config = merged_config([str(ROOT / "config" / "test_workflow.yaml")])
    text = landing.landing_page(config, tmp_path, extra="The study\n---------\n\nIts verdict.\n")
    assert text.rstrip().endswith("Its verdict.") and "The study" in render(text)


def test_the_study_verdict_is_a_section_of_the_page(tmp_path):
    config = merged_config([str(ROOT / "config" / "test_study.yaml")])
    csv = tmp_path / "study.csv"
    pending = landing.study_section(config, csv)
    assert "has not been computed yet" in pending and config["study"]["title"] in pending
    rows = [{"comparison": "best_vs_control", "label": "PAGS best − control best", "role": "primary",
             "method": "snip", "n": 6, "mean": 0.4567, "low": -0.1, "high": 1.01, "positive": 4, "p_zero_adj": 0.0004,
             "verdict": "inconclusive"},
            {"comparison": "best_vs_control", "label": "PAGS best − control best", "role": "primary",
             "method": "pooled", "n": 6, "mean": 1.5, "low": float("nan"), "high": float("nan"), "positive": 6,
             "p_zero_adj": 0.02, "verdict": "supported"}]
    import pandas as pd

    pd.DataFrame(rows).to_csv(csv, index=False)
    html = render(landing.landing_page(config, tmp_path, extra=landing.study_section(config, csv)))
    assert "The study’s verdict" in html or "The study's verdict" in html
    assert "<td>PAGS best − control best (primary)</td>" in html and "<td>pooled</td>" in html
    assert "<td>+0.46</td>" in html and "<td>[-0.10, +1.01]</td>" in html and "<td>4/6</td>" in html
    assert "<td>&lt;0.001</td>" in html and "<td>[–, –]</td>" in html and "<td>SUPPORTED</td>" in html
