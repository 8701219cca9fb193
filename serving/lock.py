"""The image's hash lock: serving/requirements.txt and serving/pip.txt, one line per wheel.

    name==version --hash=sha256:<the wheel's sha256>  # <the wheel's file name>

The hashes are those of the exact wheels the image installs: CPython 3.11 on x86-64 Linux, picked by
`pip download` with the same platform arguments serving/context.py fills the build context's
wheelhouse with. The Dockerfile installs with `pip install --require-hashes`, and checks the pip wheel
it runs from against serving/pip.txt (pip itself never enters the image).

After changing, adding or removing a pin (the hashes may be stale or missing), re-lock with ONE command:

    make lock                        # = python -m serving.lock

It keeps comments and order, re-hashes every pin, and appends (with a comment) any dependency a new
pin pulls in that the file does not pin yet. `python -m serving.lock --check` downloads and compares
without writing. tests/serving/test_lock.py fails, offline, when a pin and its hash line disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SERVING_DIR = Path(__file__).resolve().parent
REQUIREMENTS = SERVING_DIR / "requirements.txt"
PIP_LOCK = SERVING_DIR / "pip.txt"
# checkov's own venv (make supply-chain) is locked the same way: it runs on the same linux/cp311 x86-64.
CHECKOV = SERVING_DIR.parent / "requirements-checkov.txt"
# Files resolved together, and the Python they are for: the image's is any 3.11 (Debian bookworm's is 3.11.2),
# checkov's is this project's machines' and CI's (3.11.7 or later; some of its dependencies need 3.11.5).
# A dependency no file of a group pins yet is appended to the group's first file.
GROUPS = (((REQUIREMENTS, PIP_LOCK), "3.11"), ((CHECKOV,), "3.11.7"))
LOCKS = tuple(path for group, _ in GROUPS for path in group)

# The image is CPython 3.11 on x86-64 Linux, whatever machine assembles the context or the lock.
WHEEL_PLATFORM_ARGS = ("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                       "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                       "--platform", "manylinux2014_x86_64", "--platform", "any")
# Tags a wheel may carry to install on the image (what the platform arguments above admit).
PLATFORM_TAGS = re.compile(r"^(any|manylinux_2_(\d+)_x86_64|manylinux2014_x86_64|manylinux1_x86_64|manylinux2010_x86_64)$")

LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)"
                  r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})*)\s*(?:#\s*(?P<wheel>\S+\.whl))?\s*$")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


class LockError(RuntimeError):
    pass


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]
    wheel: str | None

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def parse(text: str, source: str = "requirements") -> list[str | Pin]:
    """The file as lines: a comment or blank line stays a str, a requirement becomes a Pin."""
    entries: list[str | Pin] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            entries.append(raw)
            continue
        match = LINE.match(line)
        if not match:
            raise LockError(f"{source}:{number}: {line!r} is not `name==version [--hash=sha256:...]  # wheel` "
                            "(every requirement is pinned exactly)")
        entries.append(Pin(match["name"], match["version"], tuple(HASH.findall(match["hashes"] or "")), match["wheel"]))
    return entries


def pins(path: Path) -> list[Pin]:
    return [entry for entry in parse(path.read_text(), path.name) if isinstance(entry, Pin)]


def wheel_name_version(filename: str) -> tuple[str, str, str, str, str]:
    """(distribution, version, python tag, abi tag, platform tag) of a wheel file name."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6) or not filename.endswith(".whl"):
        raise LockError(f"{filename} is not a wheel file name")
    return parts[0], parts[1], parts[-3], parts[-2], parts[-1]


def installs_on_image(filename: str) -> bool:
    """A pure-Python wheel, a cp311 one, or a stable-ABI one for CPython <= 3.11; for x86-64 Linux or any."""
    _, _, pythons, abis, platforms = wheel_name_version(filename)
    python_ok = any(
        (tag in ("py3", "cp311") and abi in ("none", "cp311", "abi3"))
        or (abi == "abi3" and re.fullmatch(r"cp3\d+", tag) and int(tag[3:]) <= 11)
        for tag in pythons.split(".") for abi in abis.split("."))
    return bool(python_ok) and any(PLATFORM_TAGS.match(tag) for tag in platforms.split("."))


def problems(path: Path) -> list[str]:
    """Why the lock does not hold, read offline: a pin without exactly one sha256 hash and the wheel it is
    of, a wheel that is not of the pinned name and version, or one that does not install on the image."""
    found = []
    try:
        entries = pins(path)
    except LockError as error:
        return [str(error)]
    if not entries:
        return [f"{path.name} pins nothing"]
    seen: set[str] = set()
    for pin in entries:
        where = f"{path.name}: {pin.requirement}"
        if canonical(pin.name) in seen:
            found.append(f"{where} is pinned twice")
        seen.add(canonical(pin.name))
        if len(pin.hashes) != 1 or not pin.wheel:
            found.append(f"{where} has no hash line (`--hash=sha256:...  # <wheel>`)")
            continue
        name, version, *_ = wheel_name_version(pin.wheel)
        if canonical(name) != canonical(pin.name) or version != pin.version:
            found.append(f"{where} carries the hash of {pin.wheel}, another version or package")
        if not installs_on_image(pin.wheel):
            found.append(f"{where}: {pin.wheel} does not install on the image (CPython 3.11, x86-64 Linux)")
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(requirements: list[str], dest: Path, *, constraints: Sequence[str] = (),
             python_version: str = "3.11") -> None:
    """pip download the image's wheels (and their dependencies) for linux/cp311 into dest."""
    platform_args = [python_version if previous == "--python-version" else arg
                     for previous, arg in zip(("", *WHEEL_PLATFORM_ARGS), WHEEL_PLATFORM_ARGS, strict=False)]
    with tempfile.TemporaryDirectory() as tmp:
        listed = Path(tmp) / "requirements.txt"
        listed.write_text("\n".join(requirements) + "\n")
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", *platform_args,
                "--dest", str(dest), "-r", str(listed)]
        if constraints:
            (Path(tmp) / "constraints.txt").write_text("\n".join(constraints) + "\n")
            argv += ["-c", str(Path(tmp) / "constraints.txt")]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise LockError(f"pip download failed (exit {done.returncode}):\n{done.stderr.strip()[-3000:]}")


def downloaded(dest: Path) -> dict[str, Path]:
    """canonical name -> the wheel pip picked."""
    return {canonical(wheel_name_version(p.name)[0]): p for p in sorted(dest.glob("*.whl"))}


def lock(paths: tuple[Path, ...], python_version: str = "3.11", *, check: bool = False, progress=print) -> list[str]:
    """Re-hash every pin of one group of lock files from the wheels pip picks now; returns what changed (or,
    with check, what differs, writing nothing)."""
    parsed = {path: parse(path.read_text(), path.name) for path in paths}
    all_pins = [entry for entries in parsed.values() for entry in entries if isinstance(entry, Pin)]
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        progress(f"lock: {', '.join(p.name for p in paths)}: downloading {len(all_pins)} pinned wheels for linux/cp311")
        download([pin.requirement for pin in all_pins], dest, python_version=python_version)
        wheels = downloaded(dest)
        unpinned = {name: wheel for name, wheel in wheels.items() if name not in {canonical(p.name) for p in all_pins}}
        changes = []
        for path, entries in parsed.items():
            lines = []
            for entry in entries:
                if isinstance(entry, str):
                    lines.append(entry)
                    continue
                wheel = wheels[canonical(entry.name)]
                fresh = Pin(entry.name, entry.version, (sha256(wheel),), wheel.name)
                if fresh != entry:
                    changes.append(f"{path.name}: {entry.requirement} -> {fresh.wheel} sha256:{fresh.hashes[0][:12]}")
                lines.append(format_pin(fresh))
            if path == paths[0] and unpinned:  # dependencies a new pin pulled in
                lines.append("# Dependencies added by `make lock` (pulled in by a pin above):")
                for _, wheel in sorted(unpinned.items()):
                    dist, version, *_ = wheel_name_version(wheel.name)
                    added = Pin(dist.replace("_", "-").lower(), version, (sha256(wheel),), wheel.name)
                    changes.append(f"{path.name}: added {added.requirement} (a dependency of a pin)")
                    lines.append(format_pin(added))
            if not check:
                path.write_text("\n".join(lines) + "\n")
    return changes


def format_pin(pin: Pin) -> str:
    return f"{pin.requirement} --hash=sha256:{pin.hashes[0]}  # {pin.wheel}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="download and compare; write nothing, exit 1 on a difference")
    args = parser.parse_args(argv)
    try:
        changes = [change for group, python in GROUPS for change in lock(group, python, check=args.check)]
    except LockError as error:
        print(f"lock: {error}", file=sys.stderr)
        return 1
    for change in changes:
        print(f"lock: {change}")
    remaining = [problem for path in LOCKS for problem in problems(path)] if not args.check else []
    for problem in remaining:
        print(f"lock: {problem}", file=sys.stderr)
    if args.check and changes:
        print("lock: the lock differs from what pip downloads now: run `make lock`", file=sys.stderr)
        return 1
    print(f"lock: {'checked' if args.check else 'wrote'} {', '.join(p.name for p in LOCKS)}"
          f" ({len(changes)} change(s))")
    return 1 if remaining else 0


if __name__ == "__main__":
    raise SystemExit(main())
