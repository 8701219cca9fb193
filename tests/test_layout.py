"""The house rules, read from the code itself: each top-level package says what it may import (`MAY_IMPORT` in
its __init__, with the reason in its docstring) and imports nothing else of ours; the scoring app imports nothing
outside itself (it is copied alone into the image); a module longer than ~400 lines says why in its opening
comment."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra import jobwheel
from training import code

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("infra", "serving", "training", "models", "monitoring", "policy", "scripts", "bench", "testing")
LONG = 400  # lines


def imports_of(files: list[Path]) -> dict[str, set[str]]:
    """{top-level package of ours: the files that import it}"""
    found: dict[str, set[str]] = {}
    for path in files:
        for module in jobwheel.first_party_imports(path, ROOT, relative=True):
            found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_it_declares(package):
    declared = importlib.import_module(package).MAY_IMPORT
    assert importlib.import_module(package).__doc__, f"{package}/__init__.py says what it owns"
    used = imports_of(sorted((ROOT / package).rglob("*.py")))
    used.pop(package, None)
    undeclared = {other: files for other, files in used.items() if other not in declared}
    assert undeclared == {}, f"{package} imports what its MAY_IMPORT does not list"


def test_serving_never_imports_training_and_the_scoring_app_is_self_contained():
    assert "training" not in importlib.import_module("serving").MAY_IMPORT
    scoring = sorted((ROOT / "serving" / "scoring").rglob("*.py"))
    outside = {m for path in scoring for m in jobwheel.first_party_imports(path, ROOT, relative=True)
               if not m.startswith("serving.scoring")}
    assert outside == set(), "serving/scoring is the image's top-level package: it can import nothing else of ours"


def test_the_rule_reader_resolves_relative_imports(tmp_path):
    scoring = tmp_path / "serving" / "scoring"
    scoring.mkdir(parents=True)
    for name in ("serving/__init__.py", "serving/context.py", "serving/scoring/__init__.py", "serving/scoring/b.py"):
        (tmp_path / name).write_text("")
    (scoring / "a.py").write_text("from . import b\nfrom .. import context\n")
    assert jobwheel.first_party_imports(scoring / "a.py", tmp_path, relative=True) == {
        "serving.scoring", "serving.scoring.b", "serving", "serving.context"}
    with pytest.raises(ValueError, match="relative imports are not used"):  # what the jobs' wheel still refuses
        jobwheel.first_party_imports(scoring / "a.py", tmp_path)


def test_long_modules_say_why_in_their_opening_comment():
    long = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            if len(lines) > LONG:
                doc = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts)).__doc__ or ""
                if "Why one module:" not in doc:
                    long[str(path.relative_to(ROOT))] = len(lines)
    assert long == {}, "each module over ~400 lines needs `Why one module: ...` in its docstring"



# ---- the product apart from its tooling ----

PRODUCT = ("infra", "serving", "training", "monitoring", "policy", "models")  # and __main__.py, Pulumi.*.yaml
TOOLS = ("bench", "scripts", "testing", "tests")  # never shipped, never imported by the product
OPENING = {"product": "Product: ", "tool": "Tooling (not shipped): "}
LAYOUT = ROOT / "docs" / "design" / "architecture.md"


def layout_table() -> dict[str, str]:
    """{top-level folder: product or tool}, read from the Layout table of the architecture page."""
    section = LAYOUT.read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    return {re.match(r"`([^`]+)/`", folder).group(1): kind for folder, kind, *_ in rows}  # type: ignore[union-attr]


def top_level_folders() -> set[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {path.split("/")[0] for path in tracked.splitlines() if "/" in path and not path.startswith(".")}


def test_every_folder_is_in_the_layout_table_as_product_or_tool():
    table = layout_table()
    assert set(table) == top_level_folders(), "docs/design/architecture.md#layout names each top-level folder once"
    assert {folder: kind for folder, kind in table.items() if kind not in OPENING} == {}
    assert {f for f, kind in table.items() if kind == "product"} == set(PRODUCT)
    assert {f for f, kind in table.items() if kind == "tool"} >= set(TOOLS)


@pytest.mark.parametrize("package", PRODUCT + TOOLS)
def test_each_package_opens_by_saying_product_or_tooling(package):
    kind = "product" if package in PRODUCT else "tool"
    doc = importlib.import_module(package).__doc__ or ""
    assert doc.startswith(OPENING[kind]), f"{package}/__init__.py's docstring opens with {OPENING[kind]!r}"


def test_no_product_module_imports_a_tool():
    """Read from the source, not through imports_of: the jobs' wheel's import walk (training/code.py FIRST_PARTY) knows
    only the packages it may ship, so it does not see an import of a tool at all."""
    for package in PRODUCT:
        assert set(importlib.import_module(package).MAY_IMPORT).isdisjoint(TOOLS), f"{package} may import a tool"
    files = [ROOT / "__main__.py", *(path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py")))]
    found = {f"{path.relative_to(ROOT)}: {module}" for path in files
             for level, module, _ in code._imports(path.read_text(), str(path))
             if not level and module.split(".")[0] in TOOLS}
    assert found == set(), "the product imports tooling it does not ship"


# ---- any model: the machinery names no model ----

# What deploys, serves and watches a model names none: the examples in models/ are examples, not the subject. The words
# are the shipped examples' columns, ids, target and module name (a team's own module may well have a column called
# `hour` that a comment of the machinery also says); a few are also plain words of the machinery, each left out for
# its reason.
MODEL_FREE = ("infra", "serving", "monitoring", "policy", "testing", "__main__.py")
EXAMPLES = ("credit_default", "house_prices")
ORDINARY = {"default": "a default value (credit-default's own word is its module and target name, both checked)",
            "customer_id": "Log Analytics calls a workspace's GUID its customer id"}


def example_words() -> set[str]:
    from training import contract

    words = set()
    for example in EXAMPLES:
        c = contract.load(f"models.{example}").contract
        words |= {*c.feature_names, *c.ids, c.target.name, *example.split("_"), example.replace("_", "-")}
    return words - set(ORDINARY)


def test_the_machinery_names_no_example_model():
    words = example_words()
    assert {"credit", "age", "credit-default", "sale_price"} <= words
    pattern = re.compile(rf"(?<![A-Za-z0-9_])({'|'.join(map(re.escape, sorted(words, key=len, reverse=True)))})"
                         r"(?![A-Za-z0-9_])", re.IGNORECASE)
    found: dict[str, list[str]] = {}
    for place in MODEL_FREE:
        path = ROOT / place
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            if "__pycache__" in file.parts:
                continue
            for number, line in enumerate(file.read_text(errors="ignore").splitlines(), start=1):
                for match in pattern.finditer(line):
                    found.setdefault(match.group(1).lower(), []).append(f"{file.relative_to(ROOT)}:{number}")
    assert found == {}, f"the machinery names an example model's words ({found}): derive them from the stack's " \
                        "`name`, the model's module or its registered version instead"


def test_infra_imports_of_training_only_the_import_walk():
    """infra may import training for training.code (standard library, shared with each version's code) and
    training.contract (the quality loop's inference table has the contract's columns; it and the model module it loads
    bring scikit-learn, which every `up` loads already for skops: infra/__init__.py), never the training machinery,
    which would load MLflow's training side into every `pulumi up`."""
    modules = {m for path in sorted((ROOT / "infra").rglob("*.py"))
               for m in jobwheel.first_party_imports(path, ROOT, relative=True) if m.split(".")[0] == "training"}
    assert modules <= {"training", "training.code", "training.contract"}, modules
    for name, allowed in (("code", set()), ("contract", {"sklearn"})):
        path = ROOT / "training" / f"{name}.py"
        third_party = {n.split(".")[0] for _, n, _ in code._imports(path.read_text(), str(path))} - set(sys.stdlib_module_names)
        assert third_party <= allowed, f"training/{name}.py imports {third_party}: infra would load them on every `up`"
