"""An ARM lookup's 404 is "not deployed yet"; any other failure is an error, even one whose text holds "404" or
"NotFound" in an id (audit W-A: a false "not found" would make the program drop the stack's Databricks resources)."""

from __future__ import annotations

from infra import arm

# The engine's message for a failed invoke: azcore's ResponseError text, as azure-native passes it on.
MISSING = ("invoke of azure-native:databricks:getWorkspace failed: GET https://management.azure.com/subscriptions/"
           "s/resourceGroups/rg/providers/Microsoft.Databricks/workspaces/dbw\n"
           "--------------------------------------------------------------------------------\n"
           "RESPONSE 404: 404 Not Found\nERROR CODE: ResourceNotFound\n")
NO_GROUP = MISSING.replace("ERROR CODE: ResourceNotFound", "ERROR CODE: ResourceGroupNotFound")
THROTTLED = ("invoke failed: GET https://management.azure.com/subscriptions/404NotFound-0000/resourceGroups/rg-404\n"
             "RESPONSE 429: 429 Too Many Requests\nERROR CODE: TooManyRequests\n"
             "x-ms-request-id: 00404000-NotFound-ResourceNotFound\n")
FORBIDDEN = MISSING.replace("RESPONSE 404: 404 Not Found", "RESPONSE 403: 403 Forbidden").replace(
    "ERROR CODE: ResourceNotFound", "ERROR CODE: AuthorizationFailed")


def test_only_a_404_or_its_codes_mean_not_deployed_yet():
    assert arm.not_found(Exception(MISSING)) and arm.not_found(Exception(NO_GROUP))
    assert not arm.not_found(Exception(THROTTLED)), "ids and request ids that hold 404 or NotFound are not answers"
    assert not arm.not_found(Exception(FORBIDDEN))


def test_no_model_yet_is_known_by_the_registrys_code_not_by_words():
    """Unity Catalog answers a missing model with NOT_FOUND ("... does not exist"), MLflow's store with
    RESOURCE_DOES_NOT_EXIST: both mean "before the first training run" (audit C2); a refusal, or a credential error
    whose text says "does not exist" of an environment variable, does not."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from infra import model_source

    assert model_source.no_such_model(MlflowException("Registered model prod.credit.m does not exist.",
                                                      error_code=codes.NOT_FOUND))
    assert model_source.no_such_model(MlflowException("Registered Model with name=m not found",
                                                      error_code=codes.RESOURCE_DOES_NOT_EXIST))
    assert not model_source.no_such_model(MlflowException("User does not have USE CATALOG on Catalog 'prod'.",
                                                          error_code=codes.PERMISSION_DENIED))
    assert not model_source.no_such_model(MlflowException(
        "Reading Databricks credential configuration failed ... 'DATABRICKS_CONFIG_PROFILE' environment variable does "
        "not exist", error_code=codes.INTERNAL_ERROR))
