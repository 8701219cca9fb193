"""The documentation site's generated parts, written from the code they describe (`python -m scripts.docs_pages`):
the home page (the README, its links made relative),
the config keys (infra/settings.py), the `make` verbs (the Makefile), the platform rules
(testing/platform_rules/ RULES) and each alert's query (infra/observability.py's rules over infra/kql.py). A page
holds each part between `<!-- generated: NAME -->` and `<!-- end: NAME -->`; the rest of the page is prose.
tests/test_docs.py fails while a part differs from what this writes (`--check` says which, without writing), so a
changed key, verb, rule or query changes its page in the same commit. `--reading` prints each page's words and
reading minutes (words / 230). The performance page is written by the benchmarks themselves (bench/report.py).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
WORDS_PER_MINUTE = 230
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)
# The stack whose alert queries the runbooks show: prod has every alert (no-traffic too), on both targets.
RUNBOOK_STACK = "prod"


# ---- the parts ----

def config_table(sections: tuple[str, ...]) -> str:
    from infra import settings

    return "| key | meaning | default |\n|---|---|---|\n" + settings.readme_table(sections) + "\n"


def make_verbs(makefile: Path = MAKEFILE) -> dict[str, str]:
    """{verb: what `make help` says of it}, for every .PHONY target that has a rule, in the order of `make help`.
    A verb the help does not describe is a KeyError naming it: each verb is documented where a person looks first."""
    text = makefile.read_text()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert phony, "the Makefile declares its verbs in .PHONY"
    defined = set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))
    verbs = [v for v in phony.group(1).split() if v in defined]
    described: dict[str, str] = {}
    current = None
    for line in re.findall(r'^\t@echo "(.*)"$', text, re.MULTILINE):
        line = line.replace("$(PORT)", "8000").replace("$(DOCS_PORT)", "8001")
        if found := re.match(r"make ([a-z][\w-]*)\s+(.*)", line):
            current = found.group(1)
            described[current] = found.group(2).strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    missing = [v for v in verbs if v not in described]
    if missing:
        raise KeyError(f"`make help` does not describe {missing}: add an @echo line under help:")
    return {verb: described[verb] for verb in described if verb in verbs}


def make_table() -> str:
    rows = [f"| `make {verb}` | {what.replace('|', '&#124;')} |" for verb, what in make_verbs().items()]
    return "| verb | what it does |\n|---|---|\n" + "\n".join(rows) + "\n"


def platform_rules_table() -> str:
    from testing.platform_rules import RULES

    rows = [f"| `{r.key}` | {r.says.replace('|', '&#124;')} | {source_link(r.doc)} | `{r.check.__module__.rsplit('.', 1)[1]}` |"
            for r in RULES]
    return (f"{len(RULES)} rules, each checked in its platform's module of `testing/platform_rules/`.\n\n"
            "| rule | what the platform does | source | module |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")


def source_link(doc: str) -> str:
    """A rule's source: a link where it is a URL, else its words (a code path, a release note)."""
    links = re.findall(r"https?://\S+", doc)
    if not links:
        return doc.replace("|", "&#124;")
    return ", ".join(f"[{url.split('//', 1)[1].split('/', 1)[0]}]({url.rstrip('.,;)')})" for url in links)


@functools.cache
def alert_rules(target: str) -> dict:
    """{alert key: AlertRule} of the runbook stack on `target`, as infra/observability.py declares them."""
    from infra import observability, program, settings, stack_files

    values = stack_files.apply_overrides(stack_files.stack_values(RUNBOOK_STACK), {"serving.target": target})
    s = settings.from_values(RUNBOOK_STACK, values, {})
    args = observability.ObservabilityArgs("rg", s.location, s.names, s.observability, program.log_source(s), True, {})
    return {rule.key: rule for rule in observability.alert_rules(args)}


def alert_query(key: str) -> str:
    """One alert's rule (measure, threshold, window) and its query on each target, for its runbook."""
    parts = []
    for target, title in (("containerapps", "Container Apps"), ("aks", "AKS")):
        rule = alert_rules(target)[key]
        parts.append(f"=== \"{title}\"\n\n    Fires when `{rule.measure}` is {OPERATORS[rule.operator]} {rule.threshold:g} over "
                     f"{rule.window_minutes} minutes ({RUNBOOK_STACK}'s values)."
                     + ("" if rule.severity is None else f" Severity {rule.severity}.")
                     + "\n\n    ```kusto\n" + "\n".join(f"    {line}".rstrip() for line in rule.query.splitlines())
                     + "\n    ```\n")
    return "\n".join(parts)


OPERATORS = {"GreaterThan": "above", "GreaterThanOrEqual": "at least", "LessThan": "below", "LessThanOrEqual": "at most"}


def generators() -> dict[str, Callable[[], str]]:
    from infra import naming, settings

    parts: dict[str, Callable[[], str]] = {
        "config-keys": lambda: config_table(settings.MAIN_TABLE),
        "promotion-keys": lambda: config_table(settings.PROMOTION_TABLE),
        "make-verbs": make_table,
        "platform-rules": platform_rules_table,
    }
    for key in naming.ALERT_KEYS:
        parts[f"alert:{key}"] = lambda key=key: alert_query(key)
    return parts


# ---- the pages ----

def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(text: str) -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}


def render(text: str, made: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + made.get(m.group("name"), m.group("body")) + m.group(4), text)


def generate() -> dict[str, str]:
    return {name: make() for name, make in generators().items()}


def index_page() -> str:
    """The site's home is the README, its links made relative to docs/ (one text, read on GitHub and on the site)."""
    return README.read_text().replace("](docs/", "](").replace(SITE_LINE, "")


SITE_LINE = "The same pages, with navigation and search: `make docs`.\n"


def stale(made: dict[str, str] | None = None) -> list[str]:
    """The generated parts that differ from the code (or that no page holds), as `page: part`."""
    made = made if made is not None else generate()
    found: dict[str, str] = {}
    problems = [] if (DOCS / "index.md").read_text() == index_page() else ["docs/index.md: the README"]
    for page in pages():
        for name, body in blocks(page.read_text()).items():
            found[name] = str(page.relative_to(ROOT))
            if name not in made:
                problems.append(f"{page.relative_to(ROOT)}: {name} (no such part)")
            elif body != made[name]:
                problems.append(f"{page.relative_to(ROOT)}: {name}")
    problems += [f"(no page): {name}" for name in made if name not in found]
    return problems


def write() -> list[Path]:
    made = generate()
    changed = []
    if (DOCS / "index.md").read_text() != index_page():
        (DOCS / "index.md").write_text(index_page())
        changed.append(DOCS / "index.md")
    for page in pages():
        text = page.read_text()
        if (new := render(text, made)) != text:
            page.write_text(new)
            changed.append(page)
    return changed


# ---- reading time ----

def words(text: str) -> int:
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)
    return len(re.findall(r"[\w`'’.-]*\w[\w`'’.-]*", text))


def reading() -> list[tuple[str, int, float]]:
    files = [README, *pages()]
    return [(str(f.relative_to(ROOT)), n, n / WORDS_PER_MINUTE) for f in files for n in [words(f.read_text())]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="list the stale parts and exit 1, writing nothing")
    parser.add_argument("--reading", action="store_true", help="words and reading minutes of README.md and each page")
    args = parser.parse_args(argv)
    if args.reading:
        for name, count, minutes in reading():
            print(f"{name:40} {count:6} words {minutes:5.1f} min")
        return 0
    if args.check:
        problems = stale()
        print("\n".join(problems) or "every generated part is up to date")
        return 1 if problems else 0
    for page in write():
        print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
