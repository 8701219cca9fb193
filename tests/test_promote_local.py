"""`make promote-local`: a version of the session's trained registry copied into a separate local
"prod" registry with lineage, re-aliased, and checked; the check fails when the copy differs.

Every registry client here searches as Unity Catalog's does (testing/unity_catalog.py): search results carry no
tags, as on Databricks, where prod's registry is `databricks-uc`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra import promote
from scripts import promote_local
from testing.unity_catalog import searching_like_uc


@pytest.fixture(scope="module", autouse=True)
def unity_catalog_searches():
    unpatched = promote.Registry.client
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(promote.Registry, "client", lambda self: searching_like_uc(unpatched(self)))
        yield


class Unreachable(promote.Registry):
    """Staging's registry, down: every call to it fails."""

    def client(self):
        raise ConnectionError(f"{self.tracking_uri} is unreachable")


@pytest.fixture(scope="module")
def promoted(registry, tmp_path_factory) -> dict:
    target = tmp_path_factory.mktemp("prod")
    source_db = Path(registry["tracking_uri"].removeprefix("sqlite:///"))
    code = promote_local.main(["--source", str(source_db), "--model", registry["model_name"], "--target", str(target),
                               "--target-model", "scoring-model-prod", "--image-digest", "sha256:" + "cd" * 32])
    return {"code": code, "target": target, "source_db": source_db,
            "client": promote.Registry(promote_local.sqlite_uri(target / "mlflow.db")).client()}


def test_copies_the_champion_with_lineage_into_its_own_registry(registry, promoted, capsys):
    assert promoted["code"] == 0
    copy = promoted["client"].get_model_version_by_alias("scoring-model-prod", "champion")
    assert copy.tags["source_version"] == registry["version"]
    assert copy.tags["source_model"] == registry["model_name"]
    assert copy.tags["source_run_id"] == registry["summary"]["run_id"]
    assert copy.tags["source_workspace"] == f"local:{promoted['source_db'].resolve()}"
    assert copy.tags["image_digest"] == "sha256:" + "cd" * 32
    assert copy.tags["decision_threshold"], "the source version's own tags travel with it (serving reads this one)"
    # its files live under the prod registry's own artifact root, not the source's
    assert str(promoted["target"] / "mlartifacts") in promoted["client"].get_model_version_download_uri(
        "scoring-model-prod", copy.version)


def test_the_copy_has_the_same_files_and_signature(registry, promoted):
    source = promote.ModelSource(promote.Registry(registry["tracking_uri"]), registry["model_name"], registry["version"], "s")
    target = promote.Registry(promote_local.sqlite_uri(promoted["target"] / "mlflow.db"))
    check = promote.verify_copy(source, target, "scoring-model-prod", "1")
    assert check.problems == [] and check.signature_equal
    assert check.source_sha256 == check.target_sha256


def test_promoting_again_reuses_the_copy(registry, promoted):
    code = promote_local.main(["--source", str(promoted["source_db"]), "--model", registry["model_name"],
                               "--target", str(promoted["target"]), "--target-model", "scoring-model-prod"])
    assert code == 0
    versions = promoted["client"].search_model_versions("name='scoring-model-prod'")
    assert [str(v.version) for v in versions] == ["1"]


def rollback(registry, promoted) -> promote.PromotedModel:
    """Promote the same source version again (prod's pinned rollback to it) while staging's registry is down."""
    down = promote.ModelSource(Unreachable(registry["tracking_uri"]), registry["model_name"], registry["version"],
                               f"local:{promoted['source_db'].resolve()}")
    target = promote.ModelTarget(promote.Registry(promote_local.sqlite_uri(promoted["target"] / "mlflow.db")),
                                 "scoring-model-prod", experiment="promotions")
    return promote.promote_model_version(down, target, image_digest="sha256:" + "cd" * 32)


def test_a_rollback_to_an_earlier_copy_does_not_need_staging(registry, promoted):
    again = rollback(registry, promoted)
    assert again.reused and again.version == "1" and again.source_version == registry["version"]
    assert again.content_sha256 == promoted["client"].get_model_version("scoring-model-prod", "1").tags["content_sha256"]


@contextmanager
def tampered_copy(promoted) -> Iterator[None]:
    """Prod's copy (version 1) with its MLmodel edited, put back afterwards."""
    uri = promoted["client"].get_model_version_download_uri("scoring-model-prod", "1")
    mlmodel = Path(uri.removeprefix("file://")) / "MLmodel"
    original = mlmodel.read_text()
    try:
        mlmodel.write_text(original + "\n# edited\n")
        yield
    finally:
        mlmodel.write_text(original)


def test_a_tampered_earlier_copy_fails_the_rollback(registry, promoted):
    """Checked against the hash recorded when it was copied (and checked against staging), not against staging."""
    with tampered_copy(promoted), pytest.raises(promote.PromotionError, match="!= recorded"):
        rollback(registry, promoted)


def test_a_tampered_copy_fails_the_check(registry, promoted):
    with tampered_copy(promoted):
        source = promote.ModelSource(promote.Registry(registry["tracking_uri"]), registry["model_name"],
                                     registry["version"], "s")
        check = promote.verify_copy(source, promote.Registry(promote_local.sqlite_uri(promoted["target"] / "mlflow.db")),
                                    "scoring-model-prod", "1")
        assert any("content sha256" in problem for problem in check.problems)


def test_missing_source_or_version_is_a_clear_error(registry, tmp_path, capsys):
    assert promote_local.main(["--source", str(tmp_path / "none.db"), "--target", str(tmp_path / "p")]) == 2
    assert "run `make local` first" in capsys.readouterr().err
    source_db = registry["tracking_uri"].removeprefix("sqlite:///")
    assert promote_local.main(["--source", source_db, "--model", registry["model_name"], "--version", "99",
                               "--target", str(tmp_path / "p")]) == 2
    assert "version 99 is not in" in capsys.readouterr().err


def test_within_one_registry_mlflow_copies_the_version(registry, tmp_path):
    """Source and target in one registry: copy_model_version, no promotion run; the same checks and lineage."""
    import shutil

    db = tmp_path / "shared.db"
    shutil.copy(Path(registry["tracking_uri"].removeprefix("sqlite:///")), db)
    shared = promote.Registry(promote_local.sqlite_uri(db))
    source = promote.ModelSource(shared, registry["model_name"], registry["version"], "local:shared")
    target = promote.ModelTarget(shared, "scoring-model-prod", experiment="promotions")
    promoted = promote.promote_model_version(source, target, image_digest="sha256:" + "cd" * 32)
    client = shared.client()
    copy = client.get_model_version("scoring-model-prod", promoted.version)
    assert copy.source == f"models:/{registry['model_name']}/{registry['version']}"
    assert copy.run_id == registry["summary"]["run_id"], "no promotion run: the copy points at the training run"
    assert client.get_experiment_by_name("promotions") is None
    assert copy.tags["source_version"] == registry["version"] and copy.tags["image_digest"] == "sha256:" + "cd" * 32
    assert copy.tags["content_sha256"] == promoted.content_sha256
    assert str(client.get_model_version_by_alias("scoring-model-prod", "champion").version) == promoted.version
    again = promote.promote_model_version(source, target)
    assert again.reused and again.version == promoted.version
