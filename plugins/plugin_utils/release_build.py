# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Build a release once, on the controller: the app's wheel plus every dependency's wheel.

The action plugin fastapi_metal.stack.release_build calls build(); the same build runs as

    python release_build.py --name NAME --source SRC --cache DIR [--constraints FILE] [--release ID]

SRC is a project directory, a wheel file, or a PEP 508 requirement (``pkg==1.2``,
``pkg @ git+https://...``); each ``--server REQ`` (gunicorn, uvicorn-worker) is resolved
with it, so an app that does not depend on the app server still gets one. The result is
``DIR/NAME/<release>.tar.gz`` holding ``wheelhouse/*.whl`` and ``requirements.txt`` (every
wheel pinned, with its sha256), so hosts install with ``pip install --no-index
--require-hashes`` and run byte-identical code.

The release id defaults to ``<version>-<key>``, where the key hashes the app wheel's
content, the constraints and the source: the same code gives the same id, so a second
run finds the tarball and builds nothing. The result (and the command's one JSON line):
release, package, version, tarball, wheels, key, changed. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NoReturn

SAFE_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class BuildError(Exception):
    """The release cannot be built; the message says why."""


def fail(msg: str) -> NoReturn:
    raise BuildError(msg)


def pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
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


def app_wheel(source: str, work: Path) -> tuple[Path | None, str]:
    """Return (the app's wheel or None for a requirement, what pip should resolve)."""
    src = Path(source).expanduser()
    if src.is_dir():
        if not (src / "pyproject.toml").exists() and not (src / "setup.py").exists():
            fail(f"{src} is a directory without pyproject.toml or setup.py")
        out = work / "app"
        pip("wheel", "--no-deps", "-q", "-w", str(out), str(src.resolve()))
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
    server: list[str] | tuple[str, ...] = (),
) -> dict[str, object]:
    """Build (or find in the cache) the release of ``source``; raises BuildError."""
    cache = Path(cache_dir).expanduser() / name
    cache.mkdir(parents=True, exist_ok=True)
    constraints = Path(constraints_file).expanduser() if constraints_file else None
    if constraints and not constraints.is_file():
        fail(f"constraints file {constraints} does not exist")

    with tempfile.TemporaryDirectory(prefix="fastapi-metal-build-") as tmp:
        work = Path(tmp)
        wheel, target = app_wheel(source, work)
        key = hashlib.sha256()
        if wheel is not None:
            package, version = wheel_meta(wheel)
            key.update(wheel_content_hash(wheel).encode())
        else:
            package, version = requirement_name(target), ""
            key.update(target.encode())
        if constraints:
            key.update(constraints.read_bytes())
        key.update("\n".join(sorted(server)).encode())
        key.update(f"{sys.version_info[:2]}".encode())
        digest = key.hexdigest()

        index = cache / f"key-{digest}.json"
        if index.exists() and not release_id:
            known = json.loads(index.read_text())
            if Path(known["tarball"]).exists():
                return {**known, "changed": False}
        if release_id:
            tarball = cache / f"{release_id}.tar.gz"
            if tarball.exists():
                return {**json.loads((cache / f"{release_id}.json").read_text()), "changed": False}

        house = work / "wheelhouse"
        extra = ["-c", str(constraints)] if constraints else []
        pip("wheel", "-q", "-w", str(house), *extra, target, *server)
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
        }
        (work / "release.json").write_text(json.dumps(meta, indent=2) + "\n")
        partial = cache / f".{release}.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            for item in ("requirements.txt", "release.json"):
                tar.add(work / item, arcname=item)
            for w in wheels:
                tar.add(w, arcname=f"wheelhouse/{w.name}")
        os.replace(partial, cache / f"{release}.tar.gz")
        (cache / f"{release}.json").write_text(json.dumps(meta) + "\n")
        index.write_text(json.dumps(meta) + "\n")
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
    args = parser.parse_args()
    try:
        result = build(
            args.name, args.source, args.cache, args.constraints, args.release, args.server
        )
    except BuildError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
