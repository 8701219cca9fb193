"""An ARM lookup's 404 is "not deployed yet"; any other failure is an error, even one whose text holds "404" or
"NotFound" in an id (audit W-A: a false "not found" would make the program drop the stack's Databricks resources)."""

from __future__ import annotations

from infra import arm

# The engine's message for a failed invoke, as the Python SDK raises it: pulumi-azure-native's own one line (since
# Dec 2024, pulumi/pulumi-azure-native#3783), and azcore's multi-line ResponseError text that it passed on before.
PREFIX = ("invoke of azure-native:databricks:getWorkspace failed: invocation of azure-native:databricks:getWorkspace "
          "returned an error: request failed /subscriptions/s/resourceGroups/rg/providers/Microsoft.Databricks/"
          "workspaces/dbw: ")
MISSING = PREFIX + 'Status=404 Code="ResourceNotFound" Message="The Resource ... was not found."'
NO_GROUP = PREFIX + 'Status=404 Code="ResourceGroupNotFound" Message="Resource group \'rg\' could not be found."'
AZCORE = (PREFIX + "GET https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/"
          "Microsoft.Databricks/workspaces/dbw\n" + "-" * 80 + "\nRESPONSE 404: 404 Not Found\nERROR CODE: ResourceNotFound\n")
THROTTLED = ("invoke failed: request failed /subscriptions/404NotFound-0000/resourceGroups/rg-404-ResourceNotFound: "
             'Status=429 Code="TooManyRequests" Message="x-ms-request-id 00404000-NotFound"')
FORBIDDEN = PREFIX + 'Status=403 Code="AuthorizationFailed" Message="... does not have authorization ..."'
NO_CODE = PREFIX + "Status=404 Message=\"\""
GATEWAY = PREFIX + 'Status=502 Code="BadGateway" Message="upstream said Status=404 Code=\\"ResourceNotFound\\""'
WRONG_SUBSCRIPTION = PREFIX + 'Status=404 Code="SubscriptionNotFound" Message="The subscription \'s\' could not be found."'


def test_only_a_404_or_its_codes_mean_not_deployed_yet():
    assert arm.not_found(Exception(MISSING)) and arm.not_found(Exception(NO_GROUP)) and arm.not_found(Exception(AZCORE))
    assert not arm.not_found(Exception(THROTTLED)), "ids and request ids that hold 404 or NotFound are not answers"
    assert not arm.not_found(Exception(FORBIDDEN))
    assert arm.not_found(Exception(NO_CODE))
    assert not arm.not_found(Exception(GATEWAY)), "the answer's own status decides, not one it quotes"
    assert not arm.not_found(Exception(WRONG_SUBSCRIPTION)), "a wrong subscription is an error, not a first up"


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
    # Unity Catalog's REST answers as MLflow raises them (its code kept, or at the message's start when unknown)
    from mlflow.exceptions import RestException

    assert model_source.no_such_model(RestException({"error_code": "CATALOG_DOES_NOT_EXIST",
                                                     "message": "Catalog 'prod' does not exist."}))
    assert model_source.no_such_model(RestException({"error_code": "NOT_FOUND", "message": "Model prod.s.m not found"}))
    assert not model_source.no_such_model(RestException({"error_code": "PERMISSION_DENIED",
                                                         "message": "User does not have USE CATALOG"}))
    assert model_source.no_such_model(MlflowException("Registered model alias champion not found.",
                                                      error_code=codes.INVALID_PARAMETER_VALUE))
    assert model_source.no_such_model(RestException({"error_code": "INVALID_PARAMETER_VALUE",
                                                     "message": "Alias champion does not exist for model prod.s.m"}))
    assert not model_source.no_such_model(RestException({"error_code": "METASTORE_DOES_NOT_EXIST",
                                                         "message": "No metastore assigned for the current workspace."}))
    assert not model_source.no_such_model(MlflowException("Invalid value 'x' for parameter 'version': not found in "
                                                          "the list", error_code=codes.INVALID_PARAMETER_VALUE))
    assert not model_source.no_such_model(MlflowException(
        "Reading Databricks credential configuration failed ... 'DATABRICKS_CONFIG_PROFILE' environment variable does "
        "not exist", error_code=codes.INTERNAL_ERROR))
