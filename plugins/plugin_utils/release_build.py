# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Build a release once, on the controller: the app's wheel plus every dependency's wheel.

The action plugin fastapi_metal.stack.release_build calls build(); the same build runs as

    python release_build.py --name NAME --source SRC --cache DIR [--constraints FILE] [--release ID]

SRC is a project directory, a wheel file, or a PEP 508 requirement (``pkg==1.2``,
``pkg @ git+https://...``); each ``--server REQ`` (gunicorn, uvicorn-worker) is resolved
with it, so an app that does not depend on the app server still gets one. The result is
``DIR/NAME/<release>.tar.gz`` holding ``.release/wheelhouse/*.whl`` and
``.release/requirements.txt`` (every wheel pinned, with its sha256), so hosts install with
``pip install --no-index --require-hashes`` and run byte-identical code, and the files the
project names (``--file alembic.ini --file migrations``) at their paths in the project.

A project pinned by a lock file builds from its pins: ``uv.lock``, ``poetry.lock`` or a
``requirements.txt`` in the project directory become constraints (with the ``--constraints``
file, if any). The project's ``Requires-Python`` is checked against the builder's Python and
the hosts' (``--host-python 3.11``), and the builder's against the hosts': wheels built by
another Python or on another machine type may not install there.

The release id defaults to ``<version>-<key>``, where the key hashes the app wheel's
content, the constraints, the pins, the files and the builder: the same code gives the same
id, so a second run finds the tarball and builds nothing. Building the app's wheel to learn
that key costs pip a few seconds of CPU: a project directory whose files (``git ls-files``
in a work tree: tracked and untracked, not ignored; else every file but build output and
tool caches) and inputs are byte for byte those of a cached build is found without pip.
A project whose version comes from version control (setuptools-scm, hatch-vcs...) always
runs pip. The result (and the command's one JSON line): release, package, version,
tarball, wheels, key, pins, python, changed.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

SAFE_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
# What a release directory holds besides the project's files (and what they may not be named).
RESERVED = ("venv", ".release", ".staged")
# The layout of the tarball, part of the key: a tarball of another layout is never reused.
LAYOUT = b"layout 2: .release/, project files"
PIN = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*===?\s*([^\s;\\]+)\s*(;[^\\#]*)?"
)


class BuildError(Exception):
    """The release cannot be built; the message says why."""


def fail(msg: str) -> NoReturn:
    raise BuildError(msg)


def pip(*args: str, python: str = "") -> None:
    proc = subprocess.run(
        [python or sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        fail(f"pip {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_meta(path: Path) -> tuple[str, str]:
    match = WHEEL_NAME.match(path.name)
    if not match:
        fail(f"{path.name} is not a wheel file name")
    return canonical(match["name"]), match["version"]


def wheel_content_hash(path: Path) -> str:
    """Hash what a wheel holds, not the zip (whose timestamps differ between builds)."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            h.update(name.encode() + b"\0" + zf.read(name) + b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_pins(project: Path) -> tuple[str, list[str]]:
    """The project's own pins as constraint lines, and the file they come from."""
    uv, poetry, reqs = project / "uv.lock", project / "poetry.lock", project / "requirements.txt"
    if uv.is_file() or poetry.is_file():
        lock = uv if uv.is_file() else poetry
        try:
            packages = tomllib.loads(lock.read_text()).get("package", [])
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            fail(f"{lock} cannot be read as TOML: {exc}")
        versions: dict[str, set[str]] = {}
        for entry in packages:
            source = entry.get("source", {}) if isinstance(entry, dict) else {}
            local = (
                any(k in source for k in ("editable", "virtual", "directory", "path", "git", "url"))
                or source.get("type") in ("directory", "file", "git", "url")
            )  # fmt: skip
            if isinstance(entry, dict) and "name" in entry and "version" in entry and not local:
                versions.setdefault(canonical(entry["name"]), set()).add(str(entry["version"]))
        # A package locked at two versions (for other platforms or Pythons) is left to pip.
        return lock.name, [
            f"{n}=={next(iter(v))}" for n, v in sorted(versions.items()) if len(v) == 1
        ]
    if reqs.is_file():
        lines = []
        for line in reqs.read_text().splitlines():
            match = PIN.match(line)
            if match:
                marker = (match[4] or "").strip()
                lines.append(
                    f"{canonical(match[1])}=={match[3]}" + (f" {marker}" if marker else "")
                )
        return reqs.name, lines
    return "", []


def project_requires_python(project: Path) -> str:
    """A project directory's requires-python, from pyproject.toml ("" when it sets none)."""
    meta = project / "pyproject.toml"
    if not meta.is_file():
        return ""
    try:
        return str(tomllib.loads(meta.read_text()).get("project", {}).get("requires-python", ""))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"{meta} cannot be read as TOML: {exc}")


def requires_python(wheel: Path) -> str:
    """The wheel's Requires-Python ("" when it sets none)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            return ""
        headers = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return str(headers.get("Requires-Python") or "").strip()


PROBE = "import platform, sys; print('%d.%d.%d %s' % (*sys.version_info[:3], platform.machine()))"
CLAUSE = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)*)(\.\*)?\s*$")


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def python_satisfies(version: str, spec: str) -> bool:
    """Whether Python ``version`` (X.Y.Z) meets a requires-python ``spec`` (PEP 440 clauses on
    release numbers: what requires-python uses); ValueError on a clause it cannot read."""
    have = numbers(version)
    for clause in filter(str.strip, spec.split(",")):
        match = CLAUSE.match(clause)
        if not match:
            raise ValueError(clause)
        op, want, star = match[1], numbers(match[2]), bool(match[3])
        if star and op not in ("==", "!="):
            raise ValueError(clause)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if star:
            ok = (have[: len(want)] == want) == (op == "==")
        elif op == "~=":
            if len(want) < 2:
                raise ValueError(clause)
            ok = a >= b and have[: len(want) - 1] == want[:-1]
        else:
            ok = {"==": a == b, "===": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b,
                  "<": a < b, ">": a > b}[op]  # fmt: skip
        if not ok:
            return False
    return True


def builder_python(python: str) -> tuple[str, str]:
    """The builder's Python as X.Y.Z, and its machine type."""
    if not python or Path(python).resolve() == Path(sys.executable).resolve():
        return ".".join(map(str, sys.version_info[:3])), platform.machine()
    proc = subprocess.run(
        [python, "-c", PROBE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        fail(f"the build Python {python} does not run: {proc.stderr.strip()[-500:]}")
    version, machine = proc.stdout.split()
    return version, machine


def check_pythons(
    wants: str, builder: tuple[str, str], hosts_python: Iterable[str], hosts_machine: Iterable[str]
) -> None:
    """The project runs on the hosts' Python, and the builder builds for it (versions X.Y.Z;
    wheels are made for X.Y)."""
    pythons, machines = sorted(set(hosts_python)), sorted(set(hosts_machine))
    minors = sorted({".".join(v.split(".")[:2]) for v in pythons})
    built = ".".join(builder[0].split(".")[:2])
    if len(minors) > 1:
        fail(
            f"the app hosts run different Pythons ({', '.join(minors)}): one release cannot serve "
            "them all; give every app host the same fastapi_app_python version"
        )
    for who, version in [("app hosts run", v) for v in pythons] + [
        ("controller builds with", builder[0])
    ]:
        try:
            ok = not wants or python_satisfies(version, wants)
        except ValueError:
            fail(f"the project's requires-python {wants!r} is not a version specifier")
        if not ok and who.startswith("app"):
            fail(
                f"the project requires Python {wants} (requires-python) but the app hosts run "
                f"Python {version}: install a matching Python there and point fastapi_app_python "
                "at it (e.g. fastapi_app_python: /usr/bin/python3.12)"
            )
        if not ok:
            fail(
                f"the project requires Python {wants} (requires-python) but the controller builds "
                f"with Python {version}: set fastapi_app_build_python to a matching Python "
                "with pip on the controller"
            )
    if minors and minors[0] != built:
        fail(
            f"the controller builds with Python {built} but the app hosts run {minors[0]}: "
            "wheels built for one do not install on the other; set fastapi_app_build_python to a "
            f"Python {minors[0]} with pip on the controller (e.g. /usr/bin/python{minors[0]})"
        )
    if machines and machines != [builder[1]]:
        fail(
            f"the controller builds on {builder[1]} but the app hosts are {', '.join(machines)}: "
            "compiled wheels would not install there; build on a controller of the hosts' type"
        )


#: Directories that hold build output or tool caches, never a project's source.
NOT_SOURCE = {
    "__pycache__", "build", "dist", "node_modules", "venv", ".venv", ".git", ".hg", ".svn",
    ".tox", ".nox", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".cache", ".eggs",
}  # fmt: skip
#: A version computed from version control: the tree alone does not say the wheel's version.
VCS_VERSION = re.compile(r"setuptools[_-]scm|hatch[_-]vcs|versioningit|dunamai|pdm[_-]backend.*scm")


def source_listing(project: Path) -> list[str]:
    """The project's files, relative: git's view of the work tree, else a walk."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project), "ls-files", "-z", "-co", "--exclude-standard"],
            capture_output=True, check=True,
        )  # fmt: skip
        return sorted({name for name in out.stdout.decode().split("\0") if name})
    except (OSError, subprocess.CalledProcessError):
        pass
    found: list[str] = []
    for root, dirs, names in os.walk(project):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCE and not d.endswith(".egg-info")]
        rel = Path(root).relative_to(project)
        found += [(rel / name).as_posix() for name in names]
    return sorted(found)


def source_fingerprint(project: Path) -> str | None:
    """A hash of the project's files (paths, modes, bytes), or None when the tree alone does
    not decide the wheel (a version from version control)."""
    pyproject = project / "pyproject.toml"
    setup = [
        project / n for n in ("pyproject.toml", "setup.cfg", "setup.py") if (project / n).is_file()
    ]
    if any(VCS_VERSION.search(p.read_text(errors="replace")) for p in setup) or not (
        pyproject.is_file() or (project / "setup.py").is_file()
    ):
        return None
    digest = hashlib.sha256(b"source 1")
    for rel in source_listing(project):
        path = project / rel
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link " + os.readlink(path).encode())
        elif path.is_file():
            digest.update(b"exec " if os.access(path, os.X_OK) else b"file ")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(b"missing")
        digest.update(b"\0")
    return digest.hexdigest()


def project_files(project: Path | None, files: Sequence[str]) -> list[tuple[Path, str]]:
    """The files the release carries: (path on the controller, path in the release)."""
    if not files:
        return []
    if project is None:
        fail(
            "fastapi_app_files names files to ship, but fastapi_app_source is not a project "
            "directory: only a project directory has files beside its package"
        )
    out: list[tuple[Path, str]] = []
    for name in files:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            fail(f"fastapi_app_files: {name!r} is not a path inside the project (e.g. alembic.ini)")
        if rel.parts[0] in RESERVED:
            fail(
                f"fastapi_app_files: {name!r} is a name the release keeps for itself "
                f"({', '.join(RESERVED)})"
            )
        path = project / rel
        if not path.exists():
            fail(f"fastapi_app_files: {name!r} does not exist in {project}")
        items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for item in items:
            if "__pycache__" in item.parts or item.suffix == ".pyc":
                continue
            out.append((item, item.relative_to(project).as_posix()))
    return out


def app_wheel(source: str, work: Path, python: str = "") -> tuple[Path | None, str]:
    """Return (the app's wheel or None for a requirement, what pip should resolve)."""
    src = Path(source).expanduser()
    if src.is_dir():
        if not (src / "pyproject.toml").exists() and not (src / "setup.py").exists():
            fail(f"{src} is a directory without pyproject.toml or setup.py")
        out = work / "app"
        pip("wheel", "--no-deps", "-q", "-w", str(out), str(src.resolve()), python=python)
        wheels = list(out.glob("*.whl"))
        if len(wheels) != 1:
            fail(f"building {src} gave {len(wheels)} wheels, expected one")
        return wheels[0], str(wheels[0])
    if src.suffix == ".whl":
        if not src.is_file():
            fail(f"wheel {src} does not exist")
        copy = work / "app" / src.name
        copy.parent.mkdir(parents=True)
        shutil.copy(src, copy)
        return copy, str(copy)
    if "/" in source and "@" not in source:
        fail(f"{source} is neither a directory, a .whl file nor a PEP 508 requirement")
    return None, source


def requirement_name(req: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        fail(f"cannot read a project name from the requirement {req!r}")
    return canonical(match[1])


def build(
    name: str,
    source: str,
    cache_dir: str,
    constraints_file: str = "",
    release_id: str = "",
    server: Sequence[str] = (),
    files: Sequence[str] = (),
    hosts_python: Sequence[str] = (),
    hosts_machine: Sequence[str] = (),
    python: str = "",
) -> dict[str, object]:
    """Build (or find in the cache) the release of ``source``; raises BuildError."""
    cache = Path(cache_dir).expanduser() / name
    cache.mkdir(parents=True, exist_ok=True)
    constraints = Path(constraints_file).expanduser() if constraints_file else None
    if constraints and not constraints.is_file():
        fail(f"constraints file {constraints} does not exist")
    builder = builder_python(python)
    src = Path(source).expanduser()
    project = src.resolve() if src.is_dir() else None
    shipped = project_files(project, files)
    pins_from, pins = lock_pins(project) if project else ("", [])

    # Before pip: it would refuse the project with words of its own, naming no variable.
    if project is not None:
        check_pythons(project_requires_python(project), builder, hosts_python, hosts_machine)
    elif src.suffix == ".whl" and src.is_file():
        check_pythons(requires_python(src), builder, hosts_python, hosts_machine)
    else:
        check_pythons("", builder, hosts_python, hosts_machine)

    # An explicit release id names one build: once built, it is shipped as it is, without
    # running pip again (a build is a burst of CPU on the controller, in the middle of a
    # rollout's first seconds).
    if release_id and (cache / f"{release_id}.tar.gz").exists():
        return {**json.loads((cache / f"{release_id}.json").read_text()), "changed": False}

    def add_inputs(digest: Any) -> None:
        """Everything but the app's wheel that goes into the key (in the key's order)."""
        if constraints:
            digest.update(constraints.read_bytes())
        digest.update("\n".join(pins).encode())
        for path, rel in shipped:
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update("\n".join(sorted(server)).encode())
        digest.update(f"{builder}".encode())

    # The same project files and inputs as a cached build: that build, without pip.
    fingerprint = source_fingerprint(project) if project is not None else None
    memo = None
    if fingerprint is not None:
        inputs = hashlib.sha256(fingerprint.encode())
        add_inputs(inputs)
        memo = cache / f"src-{inputs.hexdigest()}.json"
        if memo.exists() and not release_id:
            known = json.loads(memo.read_text())
            if Path(known["tarball"]).exists():
                return {**known, "changed": False}

    with tempfile.TemporaryDirectory(prefix="fastapi-metal-build-") as tmp:
        work = Path(tmp)
        wheel, target = app_wheel(source, work, python)
        key = hashlib.sha256(LAYOUT)
        if wheel is not None:
            package, version = wheel_meta(wheel)
            key.update(wheel_content_hash(wheel).encode())
        else:
            package, version = requirement_name(target), ""
            key.update(target.encode())
        add_inputs(key)
        digest = key.hexdigest()

        index = cache / f"key-{digest}.json"
        if index.exists() and not release_id:
            known = json.loads(index.read_text())
            if Path(known["tarball"]).exists():
                if memo is not None:
                    memo.write_text(json.dumps(known) + "\n")
                return {**known, "changed": False}

        house = work / "wheelhouse"
        extra = ["-c", str(constraints)] if constraints else []
        if pins:
            (work / "pins.txt").write_text("\n".join(pins) + "\n")
            extra += ["-c", str(work / "pins.txt")]
        pip("wheel", "-q", "-w", str(house), *extra, target, *server, python=python)
        wheels = sorted(house.glob("*.whl"))
        top = [w for w in wheels if wheel_meta(w)[0] == package]
        if len(top) != 1:
            fail(f"the wheelhouse holds no single wheel of {package}: {[w.name for w in wheels]}")
        version = wheel_meta(top[0])[1]
        release = release_id or f"{version}-{digest[:10]}"
        if not SAFE_RELEASE.match(release):
            fail(f"release id {release!r} is not a safe path segment ([A-Za-z0-9._-], max 64)")

        lines = [
            f"{wheel_meta(w)[0]}=={wheel_meta(w)[1]} --hash=sha256:{file_sha256(w)}" for w in wheels
        ]
        (work / "requirements.txt").write_text("\n".join(lines) + "\n")
        meta = {
            "release": release,
            "package": package,
            "version": version,
            "tarball": str(cache / f"{release}.tar.gz"),
            "wheels": len(wheels),
            "key": digest,
            "pins": pins_from,
            "files": len(shipped),
            "python": builder[0],
        }
        (work / "release.json").write_text(json.dumps(meta, indent=2) + "\n")
        partial = cache / f".{release}.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            for item in ("requirements.txt", "release.json"):
                tar.add(work / item, arcname=f".release/{item}")
            for w in wheels:
                tar.add(w, arcname=f".release/wheelhouse/{w.name}")
            for path, rel in shipped:
                tar.add(path, arcname=rel)
        os.replace(partial, cache / f"{release}.tar.gz")
        (cache / f"{release}.json").write_text(json.dumps(meta) + "\n")
        index.write_text(json.dumps(meta) + "\n")
        if memo is not None and not release_id:
            memo.write_text(json.dumps(meta) + "\n")
        return {**meta, "changed": True}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--constraints", default="")
    parser.add_argument("--release", default="")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        help="requirement added to the app's (the app server: gunicorn, uvicorn-worker)",
    )
    parser.add_argument("--file", action="append", default=[], help="a project file to ship")
    parser.add_argument("--host-python", action="append", default=[], help="the hosts' X.Y")
    parser.add_argument("--host-machine", action="append", default=[], help="the hosts' uname -m")
    parser.add_argument("--python", default="", help="the Python that builds (default: this one)")
    args = parser.parse_args()
    try:
        result = build(
            args.name, args.source, args.cache, args.constraints, args.release, args.server,
            args.file, args.host_python, args.host_machine, args.python,
        )  # fmt: skip
    except BuildError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
