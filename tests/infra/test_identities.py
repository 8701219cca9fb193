""".github/identities.yaml against what the stacks declare: every role assignment a stack makes is one its deploying
identity's User Access Administrator condition allows (ARM refuses any other with AuthorizationFailed, on the first
`up`), a promotion target's deployer may read the source registry its image import names, and docs/deploy.md names
the same roles."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testing.mockcloud import IMAGE_IMPORT

ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = yaml.safe_load((ROOT / ".github" / "identities.yaml").read_text())["subjects"]
DEPLOYER = {"staging": "environment:staging", "prod": "environment:production"}
ROLE = "azure-native:authorization:RoleAssignment"
# ARM authorizes an import by source resource id with read on the source registry (learn.microsoft.com/azure/
# container-registry/container-registry-import-images, "Import from an Azure container registry in the same AD
# tenant": "Reader role"); AcrPull holds only registries/pull/read (MicrosoftDocs/azure-docs#33442).
SOURCE_REGISTRY_READ = {"Reader", "Container Registry Data Importer and Data Reader"}


def roles(subject: str) -> list[dict]:
    return [r for r in IDENTITIES[subject]["azure_roles"] if isinstance(r, dict)]


def may_assign(subject: str) -> set[str]:
    return {role_id for r in roles(subject) if r["role"] == "User Access Administrator"
            for role_id in ((r.get("condition") or {}).get("may_assign") or {}).values()}


@pytest.mark.parametrize("target", ["containerapps", "aks"])
@pytest.mark.parametrize("stack", sorted(DEPLOYER))
def test_every_role_a_stack_assigns_is_allowed_by_its_deployers_condition(evaluate, stack, target):
    ev = evaluate(stack, {"serving.target": target})
    assigned = {str(r.inputs["roleDefinitionId"]).rsplit("/", 1)[-1] for r in ev.of_type(ROLE)}
    assert assigned, "the stack assigns roles (AcrPull at least)"
    assert assigned <= may_assign(DEPLOYER[stack]), f"outside the condition: {assigned - may_assign(DEPLOYER[stack])}"
    principal_types = {r.inputs.get("principalType") for r in ev.of_type(ROLE)}
    for r in roles(DEPLOYER[stack]):
        if r["role"] == "User Access Administrator":
            assert principal_types <= set(r["condition"]["principal_types"])


def test_a_promotion_targets_deployer_may_read_the_source_registry(evaluate):
    ev = evaluate("prod")
    [image_import] = ev.of_type(IMAGE_IMPORT)
    assert "/registries/" in image_import.inputs["source_registry_id"], "imported by the source's resource id"
    source = ev.config["promotion"]["sourceStack"]
    assert any(r["role"] in SOURCE_REGISTRY_READ and "registry" in r["scope"] and source in r["scope"]
               for r in roles(DEPLOYER["prod"])), "Reader on the source registry"


def test_no_deployer_holds_a_role_on_the_subscription():
    """The resource group is created by an administrator and adopted (docs/deploy.md), so every role is on a group."""
    for subject in IDENTITIES:
        assert all("subscription" not in r["scope"] for r in roles(subject)), subject


def test_the_deploy_page_names_every_role_of_the_table():
    readme = (ROOT / "docs" / "deploy.md").read_text()
    missing = {r["role"] for subject in IDENTITIES for r in roles(subject) if r["role"] not in readme}
    assert not missing, f"docs/deploy.md does not name {missing}"
    for name, role_id in {k: v for subject in DEPLOYER.values() for r in roles(subject)
                          for k, v in ((r.get("condition") or {}).get("may_assign") or {}).items()}.items():
        assert name in readme and role_id in readme, f"docs/deploy.md's condition lacks {name} ({role_id})"


# What creating a Unity Catalog securable takes of the metastore, by the resource that creates it (Unity Catalog
# privileges: learn.microsoft.com/azure/databricks/data-governance/unity-catalog/manage-privileges/privileges).
METASTORE_PRIVILEGE = {"databricks:index/credential:Credential": "CREATE SERVICE CREDENTIAL",
                       "databricks:index/catalog:Catalog": "CREATE CATALOG"}


@pytest.mark.parametrize("stack", sorted(DEPLOYER))
def test_each_deployer_holds_the_metastore_privileges_its_stack_needs(evaluate, stack):
    """The drift job's service credential is created by the deployer on every stack's first `up`: the table that says
    who CI is must give it CREATE SERVICE CREDENTIAL (and CREATE CATALOG where a stack creates its catalog)."""
    ev = evaluate(stack)
    rights = " ".join(IDENTITIES[DEPLOYER[stack]]["databricks_rights"])
    needed = {privilege for typ, privilege in METASTORE_PRIVILEGE.items() if ev.of_type(typ)}
    assert "CREATE SERVICE CREDENTIAL" in needed, "the stack creates the drift job's service credential"
    assert {p for p in needed if p not in rights} == set()
