"""The batch job's rows name the version the online request log names: a promotion target's copy (prod) scores with
its own version number, while the image it serves logs the source version it was copied from."""

from __future__ import annotations

import mlflow

from serving import batch


def test_a_promoted_copy_scores_as_the_source_version_the_service_logs(registry, promoted_copy, tmp_path):
    prod, copy = promoted_copy
    mlflow.set_tracking_uri(prod.tracking_uri)  # the job cluster's MLflow: prod's workspace
    mlflow.set_registry_uri(prod.tracking_uri)

    model = batch.load_model(f"models:/prod-model/{copy.version}", progress=lambda _: None)
    assert model.manifest.model_version == copy.version != str(registry["version"])
    assert model.source_version == str(registry["version"])
    # the inference table names the batch rows as the service names its own: the source model too (issue 22)
    assert model.source_model == registry["model_name"] != model.manifest.model_name
