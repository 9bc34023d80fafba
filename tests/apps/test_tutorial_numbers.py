"""Numbers that cannot drift: every number the tutorials mark as measured must be the number in
the experiment's results.json (or, for a marked table, the table in its summary.md); see
:mod:`scratchrnn.apps.lab.prose` for the markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchrnn.apps.lab.prose import check, documents, marked_numbers, marked_tables, refresh, refresh_files

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
TUTORIALS = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh.md"]
README = ROOT / "README.md"
# The README and the pages moved out of it (docs/*.md): wherever a marked number goes, it is checked.
PAGES = [README, *sorted(p for p in (ROOT / "docs").glob("*.md") if p not in TUTORIALS)]


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.name)
def test_every_marked_number_is_the_measured_one(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    assert len(marked_numbers(text)) >= 40 and len(marked_tables(text)) >= 9  # the markers are there
    assert check(text, IMG) == []


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.name)
def test_a_number_changed_by_hand_is_caught_and_refresh_restores_it(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    written, spec = marked_numbers(text)[0]
    edited = text.replace(f"{written}<!-- = {spec} -->", f"9{written}<!-- = {spec} -->", 1)
    assert check(edited, IMG) == [f"9{written} should be {written} ({spec})"]
    assert refresh(edited, IMG) == text  # what lab all does to the tutorials after a run


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.name)
def test_a_table_cell_changed_by_hand_is_caught(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    experiment, k, table = marked_tables(text)[0]
    row = table.splitlines()[2]  # the first row under the header
    cells = row.split("|")
    cells[2] = " 7" + cells[2]  # a digit typed into its second cell
    edited = text.replace(table, table.replace(row, "|".join(cells), 1), 1)
    assert check(edited, IMG) == [f"the table marked {experiment} {k} differs from table {k} of "
                                  f"{experiment}/summary.md"]
    assert refresh(edited, IMG) == text


def test_markers_format_and_divide(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text('{"a": {"b": [0.123456, 120000]}, "t": 50}')
    (tmp_path / "exp" / "summary.md").write_text("# exp\n\n| x |\n|---|\n| 1 |\n")
    text = ("ρ 0.123<!-- = exp/a/b/0 --> over 120,000<!-- = exp/a/b/1|, --> steps, "
            "2400<!-- = exp/a/b/1 / exp/t|.0f --> updates\n\n<!-- table: exp 1 -->\n| x |\n|---|\n| 1 |\n")
    assert check(text, tmp_path) == []
    assert check(text.replace("2400", "2401"), tmp_path) == ["2401 should be 2400 (exp/a/b/1 / exp/t|.0f)"]
    # a signed format (a difference) is read with its sign, and refreshed with it
    signed = "gain +0.12<!-- = exp/a/b/0|+.2f -->"
    assert check(signed, tmp_path) == [] and refresh(signed.replace("+0.12", "-0.5"), tmp_path) == signed


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_readme_and_docs_numbers_are_the_measured_ones(page):
    assert check(page.read_text(encoding="utf-8"), IMG) == []


def test_the_inspect_figures_are_still_marked_wherever_they_moved():
    specs = [spec for page in PAGES for _, spec in marked_numbers(page.read_text(encoding="utf-8"))]
    assert len([spec for spec in specs if spec.startswith("inspect/")]) >= 6


def test_lab_all_refreshes_every_page_that_quotes_its_results():
    assert set(documents(IMG)) == {*TUTORIALS, *PAGES}


def test_refresh_files_rewrites_the_tutorials_the_docs_pages_and_the_readme_above_them(tmp_path):
    (tmp_path / "docs" / "img" / "exp").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "exp" / "results.json").write_text('{"x": 2.5}')
    pages = [tmp_path / "docs" / "inspect.md", tmp_path / "docs" / "tutorial.md", tmp_path / "README.md"]
    for path in pages:
        path.write_text("x is 9.9<!-- = exp/x -->.\n")
    changed = refresh_files(tmp_path / "docs" / "img")
    assert changed == pages
    assert (tmp_path / "README.md").read_text() == "x is 2.5<!-- = exp/x -->.\n"
    # A lab run elsewhere (runs/lab) has no tutorials beside it: nothing is rewritten.
    (tmp_path / "runs" / "lab" / "exp").mkdir(parents=True)
    (tmp_path / "runs" / "lab" / "exp" / "results.json").write_text('{"x": 7.0}')
    assert refresh_files(tmp_path / "runs" / "lab") == []
    assert (tmp_path / "README.md").read_text() == "x is 2.5<!-- = exp/x -->.\n"
