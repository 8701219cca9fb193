"""`make promote-local`: rehearse prod's model promotion on this machine.

    python -m scripts.promote_local                       # .local/mlflow.db @champion -> .local/prod/mlflow.db
    python -m scripts.promote_local --source PATH.db --version 3 --target DIR

Copies one version of the local journey's registry ("staging") into a separate local registry
("prod", with its own artifact root) with the lineage tags, points @champion at it there, and
checks the copy: same files (content hash), same signature, lineage tags present. It calls
`infra.promote.promote_model_version`, the function prod's Pulumi program runs at deploy time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra import promote

ROOT = Path(__file__).resolve().parent.parent


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def resolve_version(registry: promote.Registry, name: str, version: str | None, alias: str) -> str:
    client = registry.client()
    if version:
        return str(client.get_model_version(name, version).version)
    return str(client.get_model_version_by_alias(name, alias).version)


def run(args: argparse.Namespace) -> int:
    source_db = args.source.resolve()
    if not source_db.exists():
        print(f"no local registry at {source_db}: run `make local` first (or pass --source)", file=sys.stderr)
        return 2
    from mlflow.exceptions import MlflowException

    source_registry = promote.Registry(sqlite_uri(source_db))
    try:
        version = resolve_version(source_registry, args.model, args.version, args.alias)
    except MlflowException as error:
        wanted = f"version {args.version}" if args.version else f"@{args.alias}"
        print(f"{args.model} {wanted} is not in {source_db}: {error.message}", file=sys.stderr)
        return 2
    target_dir = args.target.resolve()
    target_dir.mkdir(parents=True, exist_ok=True)
    source = promote.ModelSource(source_registry, args.model, version, workspace=f"local:{source_db}")
    target = promote.ModelTarget(promote.Registry(sqlite_uri(target_dir / "mlflow.db")), args.target_model or args.model,
                                 experiment="promotions", alias="champion",
                                 artifact_location=(target_dir / "mlartifacts").as_uri())
    try:
        promoted = promote.promote_model_version(source, target, image_digest=args.image_digest or "")
    except promote.PromotionError as error:
        print(f"FAIL {error}", file=sys.stderr)
        return 1
    check = promote.verify_copy(source, target.registry, promoted.name, promoted.version)
    reused = " (earlier copy reused)" if promoted.reused else ""
    print(f"""promoted {args.model} v{version} ({source_db})
      -> {promoted.name} v{promoted.version} @champion ({target_dir / 'mlflow.db'}){reused}
  files      sha256 {check.source_sha256[:16]} == {check.target_sha256[:16]}
  signature  {'identical' if check.signature_equal else 'DIFFERENT'}
  lineage    {', '.join(f'{k}={check.tags.get(k)}' for k in promote.LINEAGE)}
  MLflow UI  .venv/bin/mlflow ui --backend-store-uri {target.registry.tracking_uri} --host 127.0.0.1""")
    return 1 if check.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT / ".local" / "mlflow.db", help="the staging registry (sqlite)")
    parser.add_argument("--model", help="registered model name in the source registry (default: the dev stack's name, "
                                        "which `make local` registers)")
    parser.add_argument("--version", help="version to promote (default: the one --alias points at)")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--target", type=Path, default=ROOT / ".local" / "prod", help="folder of the prod registry")
    parser.add_argument("--target-model", help="registered model name in the prod registry (default: --model)")
    parser.add_argument("--image-digest", help="record this image digest (sha256:...) on the prod version")
    args = parser.parse_args(argv)
    if args.model is None:
        from infra import stack_files

        args.model = stack_files.project("dev")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
