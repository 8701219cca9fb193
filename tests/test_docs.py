"""The documentation: the site builds with every link and anchor checked, the README is short and leads to every page,
the generated parts (config keys, make verbs, platform rules, alert queries) are what the code says, every alert has
a runbook, every route of the app and every variable CI reads is documented, and the performance page is rendered
from the benchmarks' JSON."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import report, serving_report
from bench import spark as bench_spark
from infra import naming
from scripts import docs_pages

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LINES = 200


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's one Python tag (the mermaid fence's formatter) read as text: only the nav is wanted here."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)


def nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def walk(entries) -> list[str]:
        found: list[str] = []
        for entry in entries:
            for value in entry.values():
                found += walk(value) if isinstance(value, list) else [value]
        return found

    return walk(config["nav"])


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=config.parent, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


# ---- the site ----

def test_the_site_builds_with_every_link_and_anchor_checked(tmp_path):
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "operate" / "index.html").is_file()
    assert 'class="mermaid"' in (tmp_path / "site" / "index.html").read_text(), "the journey is drawn by mermaid"


def test_a_link_to_a_missing_anchor_fails_the_build(tmp_path):
    """The same configuration on two pages, one linking to a heading the other does not have."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](other.md#no-such-heading)\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A heading\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0] + "\nnav:\n  - index.md\n  - other.md\n"
    (tmp_path / "mkdocs.yml").write_text(config)
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0 and "no-such-heading" in built.stderr, built.stderr[-2000:]
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](other.md#a-heading)\n")
    assert mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0


def test_every_page_is_in_the_navigation():
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == set(nav_pages())


# ---- the README ----

def test_the_readme_is_short_and_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES, f"README.md has {len(text.splitlines())} lines (at most {README_LINES})"
    linked = set(re.findall(r"\]\(docs/([^)#]+)", text))
    assert [p for p in nav_pages() if p != "index.md" and p not in linked] == []
    assert all((DOCS / p).is_file() for p in linked), linked


def test_the_readme_holds_nothing_dated():
    dated = re.findall(r"\b20\d\d-\d\d-\d\d\b|\b\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* 20\d\d\b|"
                       r"\b\d\d:\d\d\b", README.read_text())
    assert dated == []


# ---- generated parts ----

def test_every_generated_part_is_what_the_code_says():
    assert docs_pages.stale() == [], "run `python -m scripts.docs_pages` and commit the pages"


def test_a_changed_part_is_found_stale(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n<!-- generated: make-verbs -->\nold\n<!-- end: make-verbs -->\n")
    monkeypatch.setattr(docs_pages, "pages", lambda: [page])
    monkeypatch.setattr(docs_pages, "ROOT", tmp_path)
    made = {"make-verbs": "new\n"}
    assert docs_pages.stale(made) == ["page.md: make-verbs"]
    page.write_text(docs_pages.render(page.read_text(), made))
    assert docs_pages.stale(made) == [] and "\nnew\n" in page.read_text()


def test_each_make_verb_is_described_by_make_help(tmp_path):
    verbs = docs_pages.make_verbs()
    assert {"local", "stop", "test", "docs", "bench", "bench-spark", "plan", "clean"} <= set(verbs)
    makefile = tmp_path / "Makefile"
    makefile.write_text('.PHONY: help hidden\nhelp:\n\t@echo "make help        this list"\nhidden:\n\ttrue\n')
    with pytest.raises(KeyError, match="hidden"):
        docs_pages.make_verbs(makefile)


def test_every_alert_has_a_runbook_with_its_query():
    operate = (DOCS / "operate.md").read_text()
    for key in naming.ALERT_KEYS:
        section = operate.split(f"\n### {key}\n", 1)[1].split("\n### ", 1)[0]
        assert "**What it means.**" in section and "**What to do.**" in section, key
        assert f"<!-- generated: alert:{key} -->" in section, key
        assert "```kusto" in section, key


def test_every_platform_rule_is_on_its_page():
    from testing.platform_rules import RULES

    page = (DOCS / "design" / "platform-rules.md").read_text()
    assert [r.key for r in RULES if f"| `{r.key}` |" not in page] == []


# ---- what the pages must name ----

def test_every_variable_ci_reads_is_in_the_deploy_page():
    used = {v for f in (ROOT / ".github" / "workflows").glob("*.yml") for v in re.findall(r"vars\.(\w+)", f.read_text())}
    table = (DOCS / "deploy.md").read_text().split("## CI's variables", 1)[1]
    assert used and [v for v in sorted(used) if f"| `{v}` |" not in table] == []


def documented_routes(page: str) -> set[tuple[str, str]]:
    """(method, path) of the route table's first column; `[/versions/{version}]` is a segment that may be left out."""
    routes = set()
    for cell in re.findall(r"^\| ((?:`[A-Z]+ /[^`]*`(?:, )?)+) \|", page, re.MULTILINE):
        for method, path in re.findall(r"`([A-Z]+) (/[^`]*)`", cell):
            optional = "[/versions/{version}]"
            paths = [path.replace(optional, ""), path.replace(optional, "/versions/{version}")]
            routes |= {(method, p) for p in paths}
    return routes


def test_every_route_of_the_app_is_in_the_api_reference(context):
    from serving.scoring.app import create_app
    from serving.scoring.settings import Settings

    front = create_app(Settings(context.path / "model", 1000, False))
    served = {(method.upper(), path) for path, operations in front.app.openapi()["paths"].items() for method in operations}
    served.add(("GET", "/docs"))  # the OpenAPI UI, outside its own document
    documented = documented_routes((DOCS / "reference" / "api.md").read_text())
    assert documented == served, f"only in the app: {served - documented}; only on the page: {documented - served}"


# ---- the performance page ----

def serving_results() -> dict:
    runs: dict = {name: {} for name in ("ours", "mlflow", "ours-invocations", "ours-v2", "bare")}
    for records in serving_report.BATCH_SIZES:
        for connections in serving_report.CONCURRENCY:
            key = serving_report.load_key(records, connections)
            for name, rps in (("ours", 4321.0), ("mlflow", 61.0), ("ours-invocations", 4000.0), ("ours-v2", 3900.0),
                              ("bare", 7654.0)):
                runs[name][key] = [serving_report.WrkResult(
                    requests=int(rps * 6), seconds=6.0, rps=rps, p50_ms=0.21, p90_ms=0.3, p99_ms=0.69, max_ms=2.0,
                    non_2xx=0, socket_errors=0, server_cores=0.9, background_cores=0.01)]
    summary = serving_report.summarize(runs)
    check = serving_report.Check("cold start (launch to /ready 200)", "<= 1.5 s", "0.69 s", True)
    return {"meta": {"model": "m", "version": "7", "runtime": "onnx", "duration": 6.0, "rounds": 1, "launches": 1,
                     "pinning": "not pinned", "cpus": 2, "date": "2026-12-07"},
            "summary": summary, "cold_start_median_s": {"ours": 0.69, "mlflow": 7.06},
            "rss_after_load": {name: {"worker_mb": mb, "tree_mb": mb, "processes": 1} for name, mb in
                               (("ours", 99.0), ("mlflow", 283.0))},
            "checks": [vars(check)], "profile_us": {}}


def spark_results() -> dict:
    batch = {"100000": {"rows_per_second": {"onnx_mapInArrow": 123456.0, "mlflow_spark_udf": 54321.0}, "speedup": 2.27,
                        "median_seconds": {bench_spark.NO_MODEL: 0.59}, "free_model": 3.1, "cpu_bound": 2.4,
                        "trees_cpu_seconds": 0.4},
             "max_abs_probability_difference": 3.7e-7}
    search = {"20000": {"median_seconds": {"sequential": 7.2, "spark_tasks": 4.5}, "speedup": 1.6, "same_choice": True}}
    return {"load": {"cores": 2, "load1_median": 1.38, "load1_min": 0.75, "load1_max": 2.2, "samples": 188},
            "batch": batch, "search": search}


def test_the_performance_page_is_rendered_from_the_benchmarks_json(tmp_path):
    import json

    results = tmp_path / "results"
    results.mkdir()
    (results / "serving.json").write_text(json.dumps(serving_results()))
    out = report.write(results, tmp_path / "performance.md")
    page = out.read_text()
    assert "| 4,321 | 61 | **70.8x** |" in page, "ours and mlflow req/s and their ratio, from the JSON"
    assert "0.69 s" in page and "7.06 s" in page and "2026-12-07" in page
    assert (tmp_path / report.SERVING_CHART).stat().st_size > 0
    assert "Recorded, not generated" in page, "no spark.json: the recorded figures, marked as such"

    (results / "spark.json").write_text(json.dumps(spark_results()))
    page = report.write(results, tmp_path / "performance.md").read_text()
    assert "123,456" in page and "54,321" in page and "2.3×" in page and "| 20,000 | 7.2 | 4.5 | 1.60× | True |" in page
    assert "Recorded, not generated" not in page
