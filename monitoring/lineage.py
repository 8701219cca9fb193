"""Which of a model's versions copy which version of another: a promotion target (prod) serves the source stack's
image, so its request log names the source's model and version, while its jobs read prod's copies, which carry the
source_model and source_version tags of infra/promote.py's lineage."""

from __future__ import annotations

from typing import Any


def copies_of(client: Any, model_name: str, source_model: str, wanted: str | None = None) -> dict[str, str]:
    """{source version: the newest version of `model_name` that copies it} (an MlflowClient whose registry holds
    `model_name`), newest first, stopping at the copy of `wanted` where one source version is asked for. Unity
    Catalog's search results carry no tags: each version's come from a get (one call per version read)."""
    numbers = sorted((int(found.version) for found in client.search_model_versions(f"name='{model_name}'")), reverse=True)
    copies: dict[str, str] = {}
    for number in numbers:
        found = client.get_model_version(model_name, str(number))
        tags = found.tags or {}
        # READY only: Unity Catalog creates a version, with its tags, before its files arrive (an interrupted copy)
        if found.status == "READY" and tags.get("source_model") == source_model and tags.get("source_version"):
            copies.setdefault(str(tags["source_version"]), str(number))
            if str(tags["source_version"]) == wanted:
                break
    return copies
