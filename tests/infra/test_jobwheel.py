"""The jobs' wheel: built from the entry points' imports, installable, and self-sufficient (run from
its install folder with the repository off the path, as a cluster runs it)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import jobwheel, settings, stack_files

NAMES = settings.from_values("dev", stack_files.stack_values("dev"), {}).names  # the dev stack's project

CHECK = """
import importlib, sys
from importlib.metadata import distribution
dist = distribution(sys.argv[1])
site = sys.argv[2]
for name in sys.argv[3:]:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), (name, module.__file__)
for point in dist.entry_points:
    assert callable(point.load()), point
print(sorted(p.name for p in dist.entry_points))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> jobwheel.Wheel:
    return jobwheel.build(tmp_path_factory.mktemp("wheel"), NAMES.wheel_distribution, NAMES.model_module)


def build(out: Path, project: Path, distribution: str = "p_jobs") -> jobwheel.Wheel:
    return jobwheel.build(out, distribution, "models.p", root=project)


def test_the_wheel_holds_exactly_what_the_entry_points_import(wheel):
    names = set(zipfile.ZipFile(wheel.path).namelist())
    assert wheel.distribution == NAMES.wheel_distribution and wheel.name.startswith(f"{NAMES.wheel_distribution}-")
    code = {n for n in names if not n.startswith(f"{wheel.distribution}-")}
    assert {"training/train.py", "training/gate.py", "training/loader.py", "monitoring/drift.py", "infra/kql.py",
            "training/baseline.py", "training/contract.py", "infra/__init__.py"} <= code
    # the model's module, which train and gate import by name (--model-module), with what it imports
    model = f"{NAMES.model_module.replace('.', '/')}.py"
    assert {"models/__init__.py", model, "training/contract.py", "training/features.py"} <= code
    assert not {n for n in code if n.startswith("models/")} - {"models/__init__.py", model}, "only this project's"
    # nothing the tasks do not import: of serving, only what the batch job scores with (the image's model preparation
    # and scorer, not the app), no Pulumi program, no data generator
    assert {n for n in code if n.startswith("serving/")} == {
        "serving/__init__.py", "serving/batch.py", "serving/compile.py", "serving/graph_rewrite.py", "serving/context.py",
        "serving/lock.py",
        "serving/manifest.py", "serving/runtime.py", "serving/scoring/__init__.py", "serving/scoring/model.py",
        "serving/inference_table.py"}  # the batch job's append to the stack's inference table
    assert not {n for n in code if n.startswith("scripts/")}
    assert not {"infra/databricks.py", "infra/program.py", "training/data.py", "monitoring/traffic.py"} & code
    # task values can be set only from notebooks (testing/platform_rules/, databricks-task-values): no task uses
    # dbutils.jobs; the one dbutils a task reaches is the drift job's service credential on the driver
    sources = {n: zipfile.ZipFile(wheel.path).read(n) for n in code}
    assert not any(b"dbutils.jobs" in text or b"taskValues" in text for text in sources.values())
    assert {n for n, text in sources.items() if b"DBUtils(" in text} == {"monitoring/drift_sources.py"}
    dist_info = f"{wheel.distribution}-{wheel.path.name.split('-')[1]}.dist-info"
    entry_points = zipfile.ZipFile(wheel.path).read(f"{dist_info}/entry_points.txt").decode()
    assert "mlops-train = training.train:cli" in entry_points and "mlops-drift = monitoring.drift:cli" in entry_points
    assert "mlops-gate = training.gate:cli" in entry_points and "mlops-batch = serving.batch:cli" in entry_points
    metadata = zipfile.ZipFile(wheel.path).read(f"{dist_info}/METADATA").decode()
    assert "Requires-Dist: skops==" in metadata and "Requires-Dist: mlflow" not in metadata  # the runtime's own


def test_installed_wheel_imports_and_loads_every_entry_point_without_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-index", "--target", str(site), str(wheel.path)], check=True)
    result = subprocess.run([sys.executable, "-c", CHECK, wheel.distribution, str(site), *wheel.modules],
                            cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(jobwheel.ENTRY_POINTS))


def test_the_build_is_deterministic_and_a_change_renames_it(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for relative in ("training/__init__.py", "training/train.py", "training/gate.py", "monitoring/__init__.py",
                     "monitoring/drift.py", "monitoring/quality_delta.py", "serving/__init__.py", "serving/batch.py",
                     "models/__init__.py", "models/p.py"):
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text("def cli():\n    pass\n")
    first, again = build(tmp_path / "a", project), build(tmp_path / "b", project)
    assert first.name == again.name and first.path.read_bytes() == again.path.read_bytes()
    assert build(tmp_path / "d", project, "q_jobs").name.startswith("q_jobs-1.0.0.dev"), "the project's distribution"
    assert "+" not in build(tmp_path / "e", project).name, "a volume upload would read a '+' as a space"
    # renamed entry points with the same code: a new name, or a cluster keeps the cached wheel that lacks them
    monkeypatch.setattr(jobwheel, "ENTRY_POINTS", {**jobwheel.ENTRY_POINTS, "other-train": "training.train:cli"})
    assert build(tmp_path / "e", project).name != first.name
    monkeypatch.undo()
    (project / "models" / "p.py").write_text("GATE = 1\n")  # the model changed: the jobs' code changed
    assert build(tmp_path / "f", project).name != first.name
    (project / "training" / "gate.py").write_text("def cli():\n    return 1\n")
    assert build(tmp_path / "c", project).name != first.name


def test_an_import_that_is_not_a_module_fails_the_build(tmp_path):
    project = tmp_path / "project"
    for relative in ("training/__init__.py", "training/gate.py", "monitoring/__init__.py", "monitoring/drift.py",
                     "monitoring/quality_delta.py", "serving/__init__.py", "serving/batch.py", "models/__init__.py",
                     "models/p.py"):
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text("")
    (project / "training" / "train.py").write_text("def cli():\n    from training.helpers import thing\n")
    with pytest.raises(ImportError, match=r"training/train\.py imports training\.helpers"):
        build(tmp_path / "out", project)
    (project / "training" / "train.py").write_text("")
    (project / "models" / "p.py").unlink()
    with pytest.raises(ImportError, match=r"the model's module models\.p is not a module of this project"):
        build(tmp_path / "out", project)


def test_a_module_imported_anywhere_is_packaged(tmp_path):
    project = tmp_path / "project"
    files = {"training/__init__.py": "", "training/gate.py": "", "training/extra.py": "", "monitoring/__init__.py": "",
             "monitoring/drift.py": "", "monitoring/quality_delta.py": "", "infra/__init__.py": "", "infra/kql.py": "",
             "serving/__init__.py": "",
             "serving/batch.py": "",
             "training/train.py": "def cli():\n    import training.extra\n    from infra import kql\n"}
    for relative, text in files.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text)
    assert set(jobwheel.modules(root=project)) == {"training", "training.train", "training.gate", "training.extra",
                                                   "monitoring", "monitoring.drift", "monitoring.quality_delta", "infra",
                                                   "infra.kql", "serving",
                                                   "serving.batch"}
    # a module the tasks import by name (the model's), and what it imports
    (project / "models").mkdir()
    (project / "models" / "__init__.py").write_text("")
    (project / "models" / "p.py").write_text("from training import extra\n")
    assert set(jobwheel.modules(root=project, imported_by_name=("models.p",))) - set(jobwheel.modules(root=project)) == {
        "models", "models.p"}


def test_pins_come_from_requirements(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment==1\nskops==0.16.0\n")
    assert jobwheel.pins(("skops",), requirements) == ["skops==0.16.0"]
    with pytest.raises(ValueError, match="pins none of"):
        jobwheel.pins(("azure-identity",), requirements)


def test_wheel_paths_are_what_the_module_finder_sees():
    assert jobwheel.module_file("training.train") == Path(jobwheel.ROOT, "training", "train.py")
    assert jobwheel.module_file("training") == Path(jobwheel.ROOT, "training", "__init__.py")
    assert jobwheel.module_file("training.nothing") is None


def test_model_build_waits_for_the_wheel_the_deploy_gives_the_job(evaluate):
    """scripts/job_report.py's --wait-for-wheel-of names the wheel the staging program gives its training job."""
    from scripts import job_report

    job = evaluate("staging").named("databricks:index/job:Job", "databricks-job")
    installed = {Path(lib["whl"]).name for task in job.inputs["tasks"] for lib in task.get("libraries") or []}
    assert installed == {job_report.pushed_wheel("staging")}
