"""report.html opened by a real headless browser (Debian's chromium): the page renders (a screenshot
that is not blank), its results table holds exactly report.json's numbers, and it does not scroll
sideways in a 1000-px window; and `edgeft run` with a budget ships the variant the rule picks."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import copy_tree

from edgeft.benchkit.report import write_reports
from edgeft.benchkit.select import select_variant
from edgeft.core.recipe import SelectSection
from edgeft.core.tasks import get_task

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Tables(HTMLParser):
    """Every table's cells, by the table's id; and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.body: dict[str, str] = {}
        self._table = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


def chromium(*args) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1000,1400", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(cls_run, tmp_path_factory):
    run_dir, _, _ = cls_run
    report = json.loads((run_dir / "bench/report.json").read_text())
    report["selection"] = select_variant(report, SelectSection(max_quality_drop=5, objective="smallest"))
    folder = tmp_path_factory.mktemp("html")
    write_reports(report, folder, get_task(report["task"]).report_view(report))
    return folder / "report.html", report


def test_a_headless_browser_renders_the_report_with_report_jsons_numbers(page, tmp_path):
    assert CHROMIUM, ".ci/run installs Debian's chromium"
    path, report = page
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", path.as_uri())
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[1] == 1000 and pixels.std() > 0.05  # text, tables and a plot: far from one colour
    assert (pixels.min(axis=2) < 0.5).mean() > 0.01  # dark ink on a good share of the page

    dom = chromium("--dump-dom", path.as_uri()).stdout
    parsed = Tables()
    parsed.feed(dom)
    results = parsed.tables["results"]
    shown = get_task(report["task"]).report_view(report)[0]
    assert results[0] == shown["headers"] and results[1:] == shown["rows"]
    rows = {v["name"]: v for v in report["variants"]}
    accuracy = shown["headers"].index("accuracy")
    for cells in results[1:]:
        assert float(cells[accuracy]) == pytest.approx(rows[cells[0]]["metrics"]["accuracy"], abs=5e-5)
    ledger = parsed.tables["ledger"]
    assert [r[1] for r in ledger[1:]] == [s["model"] for s in report["ledger"]["steps"]]
    assert f"chosen: {report['selection']['chosen']}" in dom and "<svg" in dom
    # laid out in a 1000-px window, the page is no wider than the window
    assert int(parsed.body["data-scroll-width"]) <= int(parsed.body["data-client-width"]) <= 1000


def test_run_with_a_budget_ships_the_variant_the_rule_picks_and_says_why(cls_run, tmp_path, capfd):
    from edgeft.core.artifacts import read_manifest
    from edgeft.core.recipe import recipe_from_dict
    from edgeft.pipeline import run_pipeline

    run_dir, recipe, _ = cls_run
    moved = copy_tree(run_dir, tmp_path / "run")
    budget = recipe_from_dict({**recipe.model_dump(mode="json"),
                               "select": {"max_quality_drop": 5, "objective": "smallest"}})
    run_pipeline(budget, moved, progress=False)
    report = json.loads((moved / "bench/report.json").read_text())
    expected = select_variant(report, budget.select)
    shipped = read_manifest(moved / "package", stage="package")
    assert shipped.variant == expected["chosen"] == report["selection"]["chosen"]
    assert shipped.config["selection"]["rule"] == "smallest that fits"
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"] if v["stage"] in ("export", "quantize")}
    fitting = [v["name"] for v in expected["verdicts"] if v["status"] == "fits"]
    assert sizes[expected["chosen"]] == min(sizes[n] for n in fitting)
    said = capfd.readouterr().err
    assert f"select: chosen: {expected['chosen']} (smallest that fits" in said
    assert "report.html" in read_manifest(moved / "bench", stage="bench").files
    assert f"chosen: {expected['chosen']}" in (moved / "bench/report.html").read_text()
    nothing = recipe_from_dict({**recipe.model_dump(mode="json"), "select": {"max_size_mib": 0.001}})
    from edgeft import EdgeftError
    with pytest.raises(EdgeftError, match="no variant fits the budget at 1 threads; the nearest is"):
        run_pipeline(nothing, moved, progress=False)
    assert "no variant fits" in json.loads((moved / "bench/report.json").read_text())["selection"]["error"]
    assert np.isfinite(report["variants"][0]["metrics"]["accuracy"])
