"""The image's hash lock (serving/lock.py): every pin carries the sha256 of the exact wheel the image installs,
and a pin changed without `make lock` fails here, offline. The context hands the hashes to the Dockerfile."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from serving import context as serving_context
from serving import lock

LOCKED = "fastapi==0.165.0 --hash=sha256:{h}  # fastapi-0.165.0-py3-none-any.whl".format(h="a" * 64)


@pytest.mark.parametrize("path", lock.LOCKS, ids=lambda p: p.name)
def test_every_pin_carries_the_hash_of_its_own_wheel(path):
    assert lock.problems(path) == [], "run `make lock`"
    assert all(len(pin.hashes) == 1 and pin.wheel for pin in lock.pins(path))


def test_the_image_lock_pins_the_runtime_and_the_pip_it_builds_with():
    names = {lock.canonical(pin.name) for pin in lock.pins(lock.REQUIREMENTS)}
    assert {"fastapi", "uvicorn", "onnxruntime", "numpy", "pydantic-core"} <= names
    assert "pip" not in names, "pip never enters the image: it is locked apart, in serving/pip.txt"
    assert [lock.canonical(pin.name) for pin in lock.pins(lock.PIP_LOCK)] == ["pip"]
    assert lock.pins(lock.CHECKOV)[0].requirement.startswith("checkov==")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return lock.problems(path)


def test_a_pin_changed_without_relocking_fails(tmp_path):
    assert problems_of(tmp_path, LOCKED + "\n") == []
    bumped = LOCKED.replace("fastapi==0.165.0", "fastapi==0.166.0", 1)
    assert problems_of(tmp_path, bumped) == [
        "requirements.txt: fastapi==0.166.0 carries the hash of fastapi-0.165.0-py3-none-any.whl, another version or package"]


def test_a_pin_without_a_hash_or_a_new_unpinned_line_fails(tmp_path):
    assert problems_of(tmp_path, "fastapi==0.165.0\n") == ["requirements.txt: fastapi==0.165.0 has no hash line "
                                                           "(`--hash=sha256:...  # <wheel>`)"]
    assert "not `name==version" in problems_of(tmp_path, LOCKED + "\nuvicorn>=0.54\n")[0]
    assert "pinned twice" in problems_of(tmp_path, LOCKED + "\n" + LOCKED + "\n")[0]


def test_a_wheel_for_another_platform_or_python_fails(tmp_path):
    for wheel in ("numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl",
                  "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl"):
        found = problems_of(tmp_path, f"numpy==2.4.6 --hash=sha256:{'b' * 64}  # {wheel}\n")
        assert found and "does not install on the image" in found[0], wheel
    for wheel in ("protobuf-5.29.6-cp38-abi3-manylinux2014_x86_64.whl", "flatbuffers-25.12.19-py2.py3-none-any.whl",
                  "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"):
        name, version = wheel.split("-")[:2]
        assert problems_of(tmp_path, f"{name}=={version} --hash=sha256:{'b' * 64}  # {wheel}\n") == [], wheel


def test_lock_rehashes_keeps_comments_and_adds_new_dependencies(tmp_path, monkeypatch):
    """`make lock` after a pin changed: the new wheel's hash, comments kept, a new dependency appended."""
    wheels = {"fastapi-0.166.0-py3-none-any.whl": b"new fastapi", "newdep-1.0-py3-none-any.whl": b"dep"}

    def fake_download(requirements, dest, *, constraints=(), python_version="3.11"):
        assert requirements == ["fastapi==0.166.0"] and python_version == "3.11"
        for name, content in wheels.items():
            (dest / name).write_bytes(content)

    monkeypatch.setattr(lock, "download", fake_download)
    path = tmp_path / "requirements.txt"
    path.write_text("# why these pins\n" + LOCKED.replace("fastapi==0.165.0", "fastapi==0.166.0", 1) + "\n")
    assert lock.lock((path,), check=True, progress=lambda _: None)  # --check: a difference, nothing written
    assert lock.problems(path)
    lock.lock((path,), progress=lambda _: None)
    digest = hashlib.sha256(b"new fastapi").hexdigest()
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# why these pins", f"fastapi==0.166.0 --hash=sha256:{digest}  # fastapi-0.166.0-py3-none-any.whl"]
    assert lines[-1].startswith("newdep==1.0 --hash=sha256:") and lock.problems(path) == []


def test_the_context_hands_the_lock_to_the_image_build(context):
    """The context's requirements are the lock's lines (hashes and all), and pip.sha256 is serving/pip.txt's."""
    text = (context.path / "requirements.txt").read_text()
    for pin in lock.pins(lock.REQUIREMENTS):
        assert lock.format_pin(pin) in text
    (pip,) = lock.pins(lock.PIP_LOCK)
    assert (context.path / "pip.sha256").read_text() == f"{pip.hashes[0]}  {pip.wheel}\n"


def test_fallback_packages_are_hashed_from_the_wheels_downloaded_for_them(tmp_path, monkeypatch):
    """The sklearn runtime's extra pins (the model's, not in the lock) get the sha256 of the wheels pip fetched for
    them, so the image still installs everything with --require-hashes; the locked ones keep the lock's hashes."""
    calls = []

    def fake_download(requirements, dest, *, constraints=(), python_version="3.11"):
        calls.append((requirements, list(constraints)))
        names = ["fastapi-0.165.0-py3-none-any.whl", "pip-26.3-py3-none-any.whl"] if not constraints else [
            "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
            "joblib-1.5.0-py3-none-any.whl", "fastapi-0.165.0-py3-none-any.whl"]
        for name in names:
            (dest / name).write_bytes(name.encode())

    monkeypatch.setattr(lock, "download", fake_download)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    def fill() -> list[str]:
        return serving_context._fill_wheelhouse([LOCKED], ["scikit-learn==1.9.1"], wheels, tmp_path / "cache", print)

    extras = fill()
    assert calls[1] == (["scikit-learn==1.9.1"], ["fastapi==0.165.0"])  # the locked versions constrain the extras
    assert lock.pins(lock.PIP_LOCK)[0].requirement in calls[0][0][1]
    wheel = "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    assert extras == [f"joblib==1.5.0 --hash=sha256:{hashlib.sha256(b'joblib-1.5.0-py3-none-any.whl').hexdigest()}"
                      "  # joblib-1.5.0-py3-none-any.whl",
                      f"scikit-learn==1.9.1 --hash=sha256:{hashlib.sha256(wheel.encode()).hexdigest()}  # {wheel}"]
    assert len(list(wheels.glob("*.whl"))) == 4
    # the same requirements again: from the cache, no download
    assert fill() == extras
    assert len(calls) == 2
