"""The batch job's rows name the version the online request log names: a promotion target's copy (prod) scores with
its own version number, while the image it serves logs the source version it was copied from."""

from __future__ import annotations

import mlflow

from infra import promote
from serving import batch


def test_a_promoted_copy_scores_as_the_source_version_the_service_logs(registry, tmp_path):
    prod = promote.Registry(f"sqlite:///{tmp_path / 'prod.db'}")
    client = prod.client()
    experiment = client.create_experiment("promotions", artifact_location=(tmp_path / "art").as_uri())
    older = client.create_run(experiment)  # an earlier version of prod's model: the copy's number is not the source's
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "MLmodel").write_text("artifact_path: model\n")
    client.log_artifacts(older.info.run_id, str(tmp_path / "older"), artifact_path="model")
    client.create_registered_model("prod-model")
    client.create_model_version("prod-model", f"{older.info.artifact_uri}/model", run_id=older.info.run_id)
    source = promote.ModelSource(promote.Registry(registry["tracking_uri"]), registry["model_name"], registry["version"],
                                 "staging")
    copy = promote.promote_model_version(source, promote.ModelTarget(prod, "prod-model", experiment="promotions"))
    mlflow.set_tracking_uri(prod.tracking_uri)  # the job cluster's MLflow: prod's workspace
    mlflow.set_registry_uri(prod.tracking_uri)

    model = batch.load_model(f"models:/prod-model/{copy.version}", progress=lambda _: None)
    assert model.manifest.model_version == copy.version != str(registry["version"])
    assert model.source_version == str(registry["version"])
