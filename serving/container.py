"""Build and run the scoring image without a docker engine: buildah builds, podman runs.

Used by the image tests (`make image-test`) and by `make local` when an engine is usable here.
Why one module: what buildah and podman do on this machine is written down once, next to the calls it shapes.

    python -m serving.container base-image [--rebuild]      # localhost/mlops-python-base:bookworm, once
    python -m serving.container build CONTEXT_DIR TAG       # buildah bud of a serving.context build context

What works here (Debian bookworm's buildah 1.28 and podman 4.3, as root, no systemd, no docker):

- Build: `buildah bud --isolation chroot --format docker`. The docker format keeps HEALTHCHECK (the OCI
  image format has no field for it, so buildah drops it there). The build needs no network: pip installs
  from the context's wheels/ with --no-index.
- Run: `podman --runtime runc --cgroup-manager cgroupfs --events-backend file run --network host
  --log-driver k8s-file --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -e HOST=127.0.0.1 -e PORT=...`.
  Containers ALWAYS share the host's network namespace and the service binds to 127.0.0.1: podman's
  default bridge network (10.88.0.0/16) is never used, so no traffic leaves loopback.
- Storage: the default of /etc/containers/storage.conf (overlay: native kernel overlayfs on the ext4
  disk here; the fastest and smallest). Where /var/lib/containers is itself on overlayfs (inside another
  container) overlay cannot nest: set CONTAINER_STORAGE_DRIVER=vfs and both buildah and podman get
  `--storage-driver vfs` (they share /var/lib/containers, so they must agree). Choose it on a fresh
  machine: podman refuses a storage that was first used with another driver.
- Without systemd, `podman run` logs "unable to get systemd connection to add healthchecks": the image's
  HEALTHCHECK is then not scheduled by a timer, but `podman healthcheck run NAME` runs it on demand
  (see healthcheck()). It is harmless and filtered out of our error messages.
- The base image is Debian itself: `debootstrap --variant=minbase --include=python3 bookworm` from the
  mirror this machine's apt uses, upgraded from bookworm-updates and bookworm-security, trimmed (no apt
  lists or caches, docs, man pages, locales; no compiler was ever in it), then `buildah from scratch` +
  copy + commit. `python3 -m venv --without-pip` works there with python3 alone: Debian's python3.11
  carries the venv module; only ensurepip lives in python3-venv, and the Dockerfile does not need it.
  Building it needs root (debootstrap, chroot, buildah mount) and about a minute; it is cached as an image.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "localhost/mlops-python-base:bookworm"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
TOOLS = ("buildah", "podman", "runc")
RUN_ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# podman says these on every run/rm where systemd is absent; they are not failures.
NOISE = re.compile(r"unable to get systemd connection|Removing timer for container")
TAIL_LINES = 25
SBIN_PATHS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Trimmed from the base, and kept out of later apt installs in images built on it.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


class ContainerError(RuntimeError):
    pass


@dataclass(frozen=True)
class ContainerLogs:
    stdout: str
    stderr: str


@dataclass(frozen=True)
class BaseImage:
    tag: str
    built: bool  # False when it was already there
    seconds: float


def _path_env() -> dict[str, str]:
    """runc and debootstrap live in sbin, which a non-root PATH may lack."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return {**os.environ, "PATH": os.pathsep.join(parts + [p for p in SBIN_PATHS if p not in parts])}


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_path_env()["PATH"])


def _storage_flags() -> list[str]:
    driver = os.environ.get("CONTAINER_STORAGE_DRIVER", "").strip()
    return ["--storage-driver", driver] if driver else []


def podman_cmd(*args: str) -> list[str]:
    return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            *_storage_flags(), *args]


def buildah_cmd(*args: str) -> list[str]:
    return ["buildah", *_storage_flags(), *args]


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if not NOISE.search(line)]
    return "\n".join(kept[-lines:])


def _run(argv: Sequence[str], what: str, *, timeout: float = 300, check: bool = True,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_path_env())
    except FileNotFoundError as error:
        raise ContainerError(f"{what}: {argv[0]} is not installed (run scripts/install_container_tools.sh)") from error
    except subprocess.TimeoutExpired as error:
        raise ContainerError(f"{what}: no answer after {timeout:.0f}s: {' '.join(argv)}") from error
    if check and done.returncode != 0:
        raise ContainerError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n"
                             f"{_tail(done.stderr or done.stdout)}")
    return done


def _stream(argv: Sequence[str], what: str, show: Callable[[str], str | None], *, timeout: float,
            cwd: Path | None = None) -> None:
    """Run a long command, passing chosen output lines to `show`; keep a tail for the error message."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                   env=_path_env())
    except FileNotFoundError as error:
        raise ContainerError(f"{what}: {argv[0]} is not installed (run scripts/install_container_tools.sh)") from error
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            line = line.rstrip()
            if not NOISE.search(line):
                tail.append(line)
            show(line)
            if time.monotonic() > deadline:
                process.kill()
                raise ContainerError(f"{what}: still running after {timeout:.0f}s: {' '.join(argv)}\n" + "\n".join(tail))
        code = process.wait()
    if code != 0:
        raise ContainerError(f"{what} failed (exit {code}): {' '.join(argv)}\n" + "\n".join(tail))


# -- engine and images -----------------------------------------------------------------------------------------------

def engine_available() -> bool:
    """buildah, podman and runc are installed and podman can open its storage."""
    if any(_which(tool) is None for tool in TOOLS):
        return False
    try:
        _run(podman_cmd("info", "--format", "{{.Store.GraphDriverName}}"), "podman info", timeout=60)
        _run(buildah_cmd("version"), "buildah version", timeout=60)
    except ContainerError:
        return False
    return True


def storage_driver() -> str:
    return _run(podman_cmd("info", "--format", "{{.Store.GraphDriverName}}"), "podman info").stdout.strip()


def image_exists(tag: str) -> bool:
    return _run(podman_cmd("image", "exists", tag), "podman image exists", check=False).returncode == 0


def image_inspect(tag: str) -> dict:
    """podman's view of the image: Id, Size, Config (User, Env, Cmd, ExposedPorts, Labels), Healthcheck, ..."""
    return json.loads(_run(podman_cmd("image", "inspect", tag), f"inspecting image {tag}").stdout)[0]


def image_size_bytes(tag: str) -> int:
    return int(image_inspect(tag)["Size"])


def remove_image(tag: str) -> None:
    if image_exists(tag):
        _run(podman_cmd("rmi", "--force", tag), f"removing image {tag}")


@contextlib.contextmanager
def mounted_image(tag: str) -> Iterator[Path]:
    """The image's root filesystem, read it as files (root only)."""
    path = Path(_run(podman_cmd("image", "mount", tag), f"mounting image {tag}").stdout.strip())
    try:
        yield path
    finally:
        _run(podman_cmd("image", "unmount", tag), f"unmounting image {tag}", check=False)


def build_image(context_dir: Path, tag: str, base_image: str = BASE_IMAGE, *,
                progress: Callable[[str], None] = print, timeout: float = 900) -> str:
    """buildah bud the context's Dockerfile (chroot isolation, docker format); returns the image id."""
    context_dir = Path(context_dir)
    if not (context_dir / "Dockerfile").exists():
        raise ContainerError(f"building {tag}: {context_dir} has no Dockerfile (assemble it with serving.context)")
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        argv = buildah_cmd("bud", "--isolation", "chroot", "--format", "docker", "--layers=false",
                           "--build-arg", f"BASE_IMAGE={base_image}", "--iidfile", str(iidfile), "-t", tag,
                           str(context_dir))

        def show(line: str) -> None:
            if re.match(r"^\[\d+/\d+\] STEP|^STEP ", line) or "COMMIT" in line:
                progress(f"build: {line[:160]}")

        _stream(argv, f"building {tag} from {context_dir}", show, timeout=timeout)
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
    progress(f"build: {tag} is {image_id[:12]}")
    return image_id


# -- containers ----------------------------------------------------------------------------------------------------------

def run_container(tag: str, port: int, name: str, extra_env: dict[str, str] | None = None, *,
                  read_only: bool = False) -> str:
    """Start the image detached, on the host's network, the service bound to 127.0.0.1:port; returns its id.

    read_only: a read-only root filesystem with tmpfs on /tmp, /var/tmp and /run, as Kubernetes runs it.
    """
    env = {"HOST": "127.0.0.1", "PORT": str(port), **(extra_env or {})}
    if env["HOST"] != "127.0.0.1":
        raise ContainerError(f"containers here bind to 127.0.0.1 only, not {env['HOST']}")
    argv = podman_cmd("run", "--detach", "--replace", "--name", name, "--network", "host", "--log-driver", "k8s-file",
                      *RUN_ULIMITS, *(["--read-only"] if read_only else []))
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return _run([*argv, tag], f"starting container {name} from {tag}", timeout=120).stdout.strip()


def container_logs(name: str) -> ContainerLogs:
    """What the container wrote so far, stdout and stderr apart (the request log is on stdout)."""
    done = _run(podman_cmd("logs", name), f"reading logs of container {name}")
    return ContainerLogs(stdout=done.stdout, stderr="\n".join(line for line in done.stderr.splitlines()
                                                              if not NOISE.search(line)))


def container_inspect(name: str) -> dict:
    return json.loads(_run(podman_cmd("container", "inspect", name), f"inspecting container {name}").stdout)[0]


def container_running(name: str) -> bool:
    return bool(container_inspect(name)["State"]["Running"])


def container_pid(name: str) -> int:
    """The host pid of the container's main process (no user namespace: its uid is the host's uid)."""
    return int(container_inspect(name)["State"]["Pid"])


def healthcheck(name: str) -> bool:
    """Run the image's HEALTHCHECK once, now; True when it passed."""
    done = _run(podman_cmd("healthcheck", "run", name), f"health check of container {name}", check=False, timeout=60)
    return done.returncode == 0


def exec_in(name: str, *command: str) -> str:
    return _run(podman_cmd("exec", name, *command), f"running {' '.join(command)} in container {name}").stdout


def stop_container(name: str, timeout: int = 5) -> None:
    """Stop and remove the container; nothing happens when there is none."""
    _run(podman_cmd("rm", "--force", "--ignore", "--time", str(timeout), name), f"removing container {name}",
         timeout=timeout + 60)


# -- the Debian base image ---------------------------------------------------------------------------------------------

def _sources_entries() -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) for every enabled deb entry of this machine's apt sources, one-line and deb822 forms."""
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()


def debian_mirrors(suite: str = DEBIAN_SUITE) -> tuple[str, str]:
    """(archive, security) mirrors: DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR, else those apt uses here, else
    deb.debian.org (e.g. on an Ubuntu CI machine)."""
    archive, security = os.environ.get("DEBIAN_MIRROR"), os.environ.get("DEBIAN_SECURITY_MIRROR")
    for uri, suites in _sources_entries():
        if archive is None and suite in suites:
            archive = uri
        if security is None and f"{suite}-security" in suites:
            security = uri
    return (archive or DEFAULT_MIRROR).rstrip("/"), (security or DEFAULT_SECURITY_MIRROR).rstrip("/")


def _debootstrap_progress(progress: Callable[[str], None]) -> Callable[[str], None]:
    """debootstrap prints a line per package; show its phases instead."""
    per_package = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+)( \S+)?$")
    phases = {"Retrieving": "downloading", "Validating": "downloading", "Extracting": "extracting",
              "Unpacking": "unpacking", "Configuring": "configuring"}
    phase = [""]

    def show(line: str) -> None:
        match = per_package.match(line.rstrip("."))
        if match and "Release" not in match[2] and "Packages" not in match[2]:
            if phases[match[1]] != phase[0]:
                phase[0] = phases[match[1]]
                progress(f"base: debootstrap: {phase[0]} packages ...")
        elif line.startswith(("I: ", "E: ", "W: ")):
            progress(f"base: debootstrap: {line[3:]}")

    return show


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _trim(root: Path) -> None:
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "var/log/*",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "usr/share/man/*", "usr/share/info/*",
                    "usr/share/locale/*", "usr/share/lintian/*", "dev/*", "tmp/*"):
        for path in root.glob(pattern):
            if path.name not in ("locale.alias", "partial", "lock"):
                _remove(path)
    for path in root.glob("usr/share/doc/*/*"):
        if path.name != "copyright":  # licences stay
            _remove(path)
    # The host's DNS and name: podman supplies these per container.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)


def build_base_image(tag: str = BASE_IMAGE, *, suite: str = DEBIAN_SUITE, progress: Callable[[str], None] = print,
                     workdir: Path | None = None) -> float:
    """debootstrap a minimal Debian with python3 and commit it as `tag`; returns the seconds it took."""
    if os.geteuid() != 0:
        raise ContainerError("building the base image needs root (debootstrap, chroot and buildah mount)")
    for tool in ("debootstrap", "chroot", "buildah"):
        if _which(tool) is None:
            raise ContainerError(f"building the base image needs {tool} (run scripts/install_container_tools.sh)")
    started = time.monotonic()
    archive, security = debian_mirrors(suite)
    progress(f"base: building {tag} from Debian {suite} ({archive}); about a minute, once")
    with tempfile.TemporaryDirectory(prefix="mlops-base-", dir=workdir or "/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        _stream(["debootstrap", "--variant=minbase", "--include=python3", suite, str(root), archive],
                f"debootstrap {suite} from {archive}", _debootstrap_progress(progress), timeout=900)
        (root / "etc/dpkg/dpkg.cfg.d/excludes").write_text(DPKG_EXCLUDES)
        (root / "etc/apt/sources.list").write_text(f"deb {archive} {suite} main\n"
                                                   f"deb {archive} {suite}-updates main\n"
                                                   f"deb {security} {suite}-security main\n")
        progress(f"base: security and point updates from {suite}-updates and {suite}-security")
        apt_env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
        _run(["chroot", str(root), *apt_env, "apt-get", "update", "-qq"], "apt-get update in the base", timeout=600)
        upgraded = _run(["chroot", str(root), *apt_env, "apt-get", "upgrade", "-y", "-qq", "--no-install-recommends"],
                        "apt-get upgrade in the base", timeout=600).stdout
        progress(f"base: upgraded {upgraded.count('Unpacking ')} packages")
        _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean in the base")
        _run(["chroot", str(root), "python3", "-c", "import venv, sys; assert sys.version_info[:2] == (3, 11)"],
             "checking python3.11 and venv in the base")
        _trim(root)

        container = _run(buildah_cmd("from", "scratch"), "buildah from scratch").stdout.strip()
        try:
            mount = _run(buildah_cmd("mount", container), "buildah mount").stdout.strip()
            _run(["cp", "-a", f"{root}/.", f"{mount}/"], "copying the root filesystem into the image", timeout=600)
            _run(buildah_cmd("umount", container), "buildah umount")
            python = _run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Version}", "python3.11"],
                          "reading the python3.11 version").stdout.strip()
            _run(buildah_cmd("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "--env", "LANG=C.UTF-8", "--cmd", "python3",
                             "--label", f"org.opencontainers.image.title=Debian {suite} minbase with python3",
                             "--label", f"org.opencontainers.image.source={archive}",
                             "--label", f"mlops.debian.python3.11={python}",
                             "--created-by", f"debootstrap --variant=minbase --include=python3 {suite}",
                             container), "buildah config")
            _run(buildah_cmd("commit", "--quiet", "--format", "docker", "--rm", container, tag),
                 f"committing {tag}", timeout=600)
        except BaseException:
            _run(buildah_cmd("rm", container), "buildah rm", check=False)
            raise
    seconds = time.monotonic() - started
    progress(f"base: {tag} built in {seconds:.0f}s, {image_size_bytes(tag) / 1e6:.0f} MB (python3.11 {python})")
    return seconds


def ensure_base_image(tag: str = BASE_IMAGE, *, rebuild: bool = False, progress: Callable[[str], None] = print) -> BaseImage:
    """The local base image, built only when it is missing (or rebuild)."""
    if image_exists(tag) and not rebuild:
        progress(f"base: {tag} is cached ({image_size_bytes(tag) / 1e6:.0f} MB); --rebuild or `podman rmi` to rebuild")
        return BaseImage(tag, built=False, seconds=0.0)
    return BaseImage(tag, built=True, seconds=build_base_image(tag, progress=progress))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("base-image", help=f"build {BASE_IMAGE} unless it exists")
    base.add_argument("--tag", default=BASE_IMAGE)
    base.add_argument("--rebuild", action="store_true")
    build = commands.add_parser("build", help="build a serving.context build context into an image")
    build.add_argument("context_dir", type=Path)
    build.add_argument("tag")
    build.add_argument("--base-image", default=BASE_IMAGE)
    args = parser.parse_args(argv)
    try:
        if args.command == "base-image":
            ensure_base_image(args.tag, rebuild=args.rebuild)
        else:
            if args.base_image == BASE_IMAGE:
                ensure_base_image(args.base_image)
            build_image(args.context_dir, args.tag, args.base_image)
    except ContainerError as error:
        print(f"container: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
