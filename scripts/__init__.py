"""Tooling (not shipped): the commands people and CI run (`make local`, `make plan`, releases, the docs' pages).

Entry points a person or CI runs (`make local`, `make plan`, releases, the model-build report): they compose
the other packages and own no logic those need. May import: everything of ours.
"""

MAY_IMPORT: tuple[str, ...] = ("infra", "serving", "training", "monitoring", "testing")
