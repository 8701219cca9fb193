"""Unity Catalog's model registry searches, over a local MLflow store: a stand-in returns what the real client returns.

With `databricks-uc`, MLflow's search_model_versions and search_registered_models return ModelVersionSearch and
RegisteredModelSearch objects, built from the service's protos by mlflow/utils/_unity_catalog_utils.py
(model_version_search_from_uc_proto, registered_model_search_from_uc_proto): no tags, no aliases, and `tags` and
`aliases` are methods that raise (mlflow/entities/model_registry/model_version_search.py). A sqlite store returns full
ModelVersions, so code that reads a search result's tags passes there and crashes on Databricks. `searching_like_uc`
wraps a local MlflowClient so that its searches go through those very functions, the rest unchanged.
"""

from __future__ import annotations

from typing import Any

from mlflow.protos.databricks_uc_registry_messages_pb2 import ModelVersion as ProtoModelVersion
from mlflow.protos.databricks_uc_registry_messages_pb2 import ModelVersionStatus
from mlflow.protos.databricks_uc_registry_messages_pb2 import RegisteredModel as ProtoRegisteredModel
from mlflow.store.entities.paged_list import PagedList
from mlflow.utils._unity_catalog_utils import model_version_search_from_uc_proto, registered_model_search_from_uc_proto


class UnityCatalogSearches:
    """A client whose searches return Unity Catalog's search classes; every other call is the wrapped client's."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def search_model_versions(self, *args: Any, **kwargs: Any) -> PagedList:
        found = self._client.search_model_versions(*args, **kwargs)
        return PagedList([model_version_search_from_uc_proto(_version_proto(v)) for v in found], found.token)

    def search_registered_models(self, *args: Any, **kwargs: Any) -> PagedList:
        found = self._client.search_registered_models(*args, **kwargs)
        return PagedList([registered_model_search_from_uc_proto(_model_proto(m)) for m in found], found.token)


def searching_like_uc(client: Any) -> UnityCatalogSearches:
    return UnityCatalogSearches(client)


def _version_proto(version: Any) -> ProtoModelVersion:
    """The version as the Unity Catalog service sends it in a search response (version numbers are strings there)."""
    return ProtoModelVersion(
        name=version.name, version=str(version.version), creation_timestamp=version.creation_timestamp or 0,
        last_updated_timestamp=version.last_updated_timestamp or 0, description=version.description or "",
        user_id=version.user_id or "", source=version.source or "", run_id=version.run_id or "",
        status=ModelVersionStatus.Value("READY"), status_message=version.status_message or "")


def _model_proto(model: Any) -> ProtoRegisteredModel:
    return ProtoRegisteredModel(name=model.name, creation_timestamp=model.creation_timestamp or 0,
                                last_updated_timestamp=model.last_updated_timestamp or 0,
                                description=model.description or "")
