"""bench/render.py: every results table in the README and docs/ is what its JSON renders, and a table
changed by hand (or a JSON changed under it) is caught by --check, naming the page and the table."""
from __future__ import annotations

import json
import shutil

import pytest

from bench import render


def test_the_committed_tables_are_what_their_json_renders(capsys):
    assert render.main(["--check"]) == 0, capsys.readouterr().err
    pages = {p.relative_to(render.ROOT).as_posix(): p.read_text() for p in render.pages()}
    assert "README.md" in pages and sum(render.BLOCK.search(t) is not None for t in pages.values()) >= 8
    for name, text in pages.items():  # every table says where its numbers come from: file, commit and CPU
        for block in render.BLOCK.finditer(text):
            if block["name"] == "families":  # not a measurement: the task registries, each ✓ a test
                assert "tests/test_families.py" in block["body"], name
            elif block["name"] != "llamacpp_history":
                assert "bench/results/" in block["body"] and "measured at commit `" in block["body"], (name, block[0][:80])


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A copy of the results and of one page, where the renderer looks."""
    shutil.copytree(render.RESULTS, tmp_path / "bench" / "results")
    (tmp_path / "README.md").write_text("# x\n\n<!-- render: classifier_vs_optimum -->\nstale\n<!-- /render -->\nend\n")
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(render, "RESULTS", tmp_path / "bench" / "results")
    return tmp_path


def test_a_stale_table_fails_the_check_and_rendering_mends_it(sandbox, capsys):
    assert render.main(["--check"]) == 1
    assert "README.md: classifier_vs_optimum" in capsys.readouterr().err
    assert render.main([]) == 0
    page = (sandbox / "README.md").read_text()
    assert "| **edgeft-int8** | 22.0 | 0.9852 |" in page and page.endswith("<!-- /render -->\nend\n")
    assert render.main(["--check"]) == 0
    # the JSON moves: the table no longer says what it says
    path = sandbox / "bench/results/compare_optimum.json"
    data = json.loads(path.read_text())
    data["results"][-1]["accuracy"] = 0.5
    path.write_text(json.dumps(data))
    assert render.main(["--check"]) == 1
    render.main([])
    assert "| **edgeft-int8** | 22.0 | 0.5000 |" in (sandbox / "README.md").read_text()


def test_an_unknown_table_or_a_missing_json_is_an_error(sandbox, capsys):
    (sandbox / "README.md").write_text("<!-- render: no_such_table -->\n<!-- /render -->\n"
                                       "<!-- render: run_report no_such_run -->\n<!-- /render -->\n")
    assert render.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "unknown table 'no_such_table'" in err and "table 'run_report no_such_run' cannot be rendered" in err
