"""Where each part runs: one Pulumi component per Azure concern (settings, observability, registry,
Databricks, image, Container Apps, AKS, promotion)."""
