"""Which modules of ours a module needs: its first-party imports at any depth, read from its bytecode.

Two things ship code of ours and must ship exactly what it imports: the Databricks jobs' wheel (infra/jobwheel.py:
the entry points' modules and the model module) and each registered model version (training/train.py: the model
module and what it imports, as MLflow `code_paths`, so an image that loads a class of the team's own finds it).
Standard library only: infra imports it without loading training's dependencies.
"""

from __future__ import annotations

import dis
import functools
import types
from collections.abc import Callable, Iterable
from pathlib import Path

FIRST_PARTY = ("training", "monitoring", "infra", "serving", "scripts", "models")
Locate = Callable[[str], Path | None]  # module name -> its file (a package's __init__.py), or None


def module_file(name: str, root: Path) -> Path | None:
    """The file of module `name` under `root` (a package's __init__.py), or None."""
    base = root / name.replace(".", "/")
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


@functools.lru_cache(maxsize=512)
def _imports(source: str, filename: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(level, module, names imported from it) for every import statement, nested functions included, read from
    the compiled bytecode. Not `ast.parse`: CPython 3.11 keeps the AST constructor's recursion depth in state shared
    by all threads, so a parse while another thread formats a traceback (3.11's traceback module parses source for
    its ^^^ carets) fails with "AST constructor recursion depth mismatch" (python/cpython#106905). `compile` to
    bytecode never builds Python AST objects. Cached: every stack evaluation builds the wheel."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    codes = [compile(source, filename, "exec", dont_inherit=True)]
    while codes:
        code = codes.pop()
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        instructions = list(dis.get_instructions(code))
        for i, ins in enumerate(instructions):
            if ins.opname != "IMPORT_NAME":
                continue
            level = instructions[i - 2].argval  # LOAD_CONST level, LOAD_CONST fromlist, IMPORT_NAME module
            names = []
            for after in instructions[i + 1:]:
                if after.opname == "IMPORT_FROM":
                    names.append(after.argval)
                elif after.opname not in ("STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_DEREF", "COPY",
                                          "SWAP", "POP_TOP", "IMPORT_STAR"):
                    break
            found.append((level, ins.argval, tuple(names)))
    return tuple(found)


def first_party_imports(path: Path, root: Path, *, relative: bool = False, locate: Locate | None = None) -> set[str]:
    """Modules of ours that `path` imports anywhere in its body (`from a import b` may name module a.b).
    `relative`: resolve relative imports (serving/scoring uses them: it is a top-level package in the image)
    instead of refusing them, as the wheel must. `locate` finds a module's file (default: under `root`)."""
    find = locate or (lambda name: module_file(name, root))
    found: set[str] = set()
    for level, module, imported in _imports(path.read_text(), str(path)):
        if level and relative:
            package = path.relative_to(root).parent.parts
            module = ".".join([*package[:len(package) - (level - 1)], *([module] if module else [])])
        elif level:
            raise ValueError(f"{path}: relative imports are not used in this project; write the absolute module")
        names = [module, *(f"{module}.{name}" for name in imported)]
        found.update(n for n in names if n.split(".")[0] in FIRST_PARTY and find(n))
        if module.split(".")[0] in FIRST_PARTY and not find(module):
            raise ImportError(f"{path} imports {module}, which is not a module of this project")
    return found


def closure(start: Iterable[str], locate: Locate, root: Path) -> dict[str, Path]:
    """Module name -> file: the `start` modules, what they import of ours at any depth, and their parent packages
    (importing a.b runs a/__init__.py). A start module that cannot be found is an ImportError naming it."""
    todo, starts = list(start), set(start)
    found: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = locate(name)
        if path is None:
            raise ImportError(f"{'module' if name in starts else 'imported module'} {name} is not a module of this "
                              "project")
        found[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(first_party_imports(path, root, locate=locate))
    return dict(sorted(found.items()))


def imported(name: str) -> Path | None:
    """The file Python imports module `name` from (wherever its package lives), or None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def relative_file(name: str, path: Path) -> str:
    """Where module `name` (at `path`) goes in a tree of packages: a/b.py, or a/b/__init__.py for a package."""
    stem = name.replace(".", "/")
    return f"{stem}/__init__.py" if path.name == "__init__.py" else f"{stem}.py"


def distributions(module: str) -> dict[str, str]:
    """{distribution: installed version} of what module `module` and its first-party imports import from outside the
    standard library and this project (scikit-learn for `sklearn`, lightgbm, ...)."""
    import importlib.metadata
    import sys

    names = set()
    for path in closure([module], imported, Path("/")).values():
        names |= {imported_name.split(".")[0] for level, imported_name, _ in _imports(path.read_text(), str(path))
                  if not level and imported_name}
    third_party = names - set(sys.stdlib_module_names) - set(FIRST_PARTY)
    owners = importlib.metadata.packages_distributions()
    found = {}
    for top in sorted(third_party):
        for distribution in owners.get(top, []):
            found[distribution.lower()] = importlib.metadata.version(distribution)
    return found
