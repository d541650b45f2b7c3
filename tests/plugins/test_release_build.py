"""The release build (plugins/plugin_utils/release_build.py) and its action plugin
(fastapi_metal.stack.release_build), from a wheel without dependencies: pip copies it into
the wheelhouse without an index. Builds of the real app run in the cluster scenario."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils import release_build as build

from tests.helpers.modules import ROOT, collection_path


def tiny_wheel(directory: Path, version: str = "1.0", body: str = "X = 1\n") -> Path:
    """A valid pure-Python wheel ``tinyapp-<version>`` holding one module."""
    wheel = directory / f"tinyapp-{version}-py3-none-any.whl"
    info = f"tinyapp-{version}.dist-info"
    files = {
        "tinyapp/__init__.py": body,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: tinyapp\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_a_release_holds_every_wheel_pinned_with_its_hash(tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    first = build.build("tiny", str(wheel), str(tmp_path / "cache"))
    assert first["changed"] is True and first["package"] == "tinyapp" and first["version"] == "1.0"
    assert first["release"].startswith("1.0-") and first["wheels"] == 1
    with tarfile.open(first["tarball"]) as tar:
        names = sorted(tar.getnames())
        reqs = tar.extractfile(".release/requirements.txt").read().decode()  # type: ignore[union-attr]
    assert names == [
        ".release/release.json",
        ".release/requirements.txt",
        ".release/wheelhouse/tinyapp-1.0-py3-none-any.whl",
    ]
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert reqs == f"tinyapp==1.0 --hash=sha256:{sha}\n"
    again = build.build("tiny", str(wheel), str(tmp_path / "cache"))
    assert again == {**first, "changed": False}, "the same code: found in the cache, not rebuilt"


def test_other_code_gets_another_release_id(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    one = build.build("tiny", str(tiny_wheel(tmp_path / "a")), str(tmp_path / "c"))
    (tmp_path / "b").mkdir()
    two = build.build("tiny", str(tiny_wheel(tmp_path / "b", body="X = 2\n")), str(tmp_path / "c"))
    assert one["release"] != two["release"] and one["version"] == two["version"] == "1.0"


def test_a_named_release_and_bad_inputs(tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    named = build.build("tiny", str(wheel), str(tmp_path / "cache"), release_id="v1")
    assert named["release"] == "v1" and named["tarball"].endswith("/tiny/v1.tar.gz")
    with pytest.raises(build.BuildError, match="not a safe path segment"):
        build.build("tiny", str(wheel), str(tmp_path / "cache"), release_id="../escape")
    with pytest.raises(build.BuildError, match=r"constraints file .* does not exist"):
        build.build("tiny", str(wheel), str(tmp_path / "cache"), constraints_file="/nope.txt")


def test_the_action_plugin_runs_the_build_on_the_controller(tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    args = json.dumps({"name": "tiny", "source": str(wheel), "cache": str(tmp_path / "cache")})

    def adhoc(module_args: str) -> tuple[int, str]:
        proc = subprocess.run(
            ["ansible", "localhost", "-m", "fastapi_metal.stack.release_build", "-a", module_args,
             "-o"],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
            env={"PATH": str(Path(collection_path()).parents[1] / ".venv/bin") + ":/usr/bin:/bin",
                 "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_INVENTORY": "localhost,",
                 "HOME": str(tmp_path)},
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = adhoc(args)
    assert rc == 0 and '"changed": true' in out and '"release": "1.0-' in out, out
    rc, out = adhoc(args)
    assert rc == 0 and '"changed": false' in out, out
    rc, out = adhoc(json.dumps({"name": "tiny", "source": str(wheel), "cache": str(tmp_path),
                                "release": "a/b"}))  # fmt: skip
    assert rc != 0 and "cannot be built: release id 'a/b' is not a safe path segment" in out, out


def test_a_lock_file_becomes_the_builds_constraints(tmp_path: Path) -> None:
    """uv.lock, poetry.lock and requirements.txt pins; the project itself, local sources and a
    package locked at two versions (markers) are left out."""
    uv = tmp_path / "uv"
    uv.mkdir()
    (uv / "uv.lock").write_text(
        "version = 1\n"
        '[[package]]\nname = "anyio"\nversion = "4.4.0"\nsource = { registry = "https://x" }\n'
        '[[package]]\nname = "My_App"\nversion = "0.1.0"\nsource = { editable = "." }\n'
        '[[package]]\nname = "numpy"\nversion = "1.26.4"\nsource = { registry = "https://x" }\n'
        '[[package]]\nname = "numpy"\nversion = "2.1.0"\nsource = { registry = "https://x" }\n'
    )
    (uv / "requirements.txt").write_text("ignored==1.0\n")
    assert build.lock_pins(uv) == ("uv.lock", ["anyio==4.4.0"])
    poetry = tmp_path / "poetry"
    poetry.mkdir()
    (poetry / "poetry.lock").write_text(
        '[[package]]\nname = "SQLAlchemy"\nversion = "2.0.36"\n'
        '[[package]]\nname = "lib"\nversion = "0.1"\n'
        '[package.source]\ntype = "directory"\nurl = "../lib"\n'
    )
    assert build.lock_pins(poetry) == ("poetry.lock", ["sqlalchemy==2.0.36"])
    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "requirements.txt").write_text(
        "# pinned\n-r base.txt\nfastapi==0.115.0 \\\n    --hash=sha256:abc\n"
        "uvicorn[standard]==0.30.6\nrequests>=2\ntomli==2.0.1 ; python_version < '3.11'\n"
    )
    assert build.lock_pins(reqs) == (
        "requirements.txt",
        ["fastapi==0.115.0", "uvicorn==0.30.6", "tomli==2.0.1 ; python_version < '3.11'"],
    )
    assert build.lock_pins(tmp_path) == ("", [])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "uv.lock").write_text("[[package]\n")
    with pytest.raises(build.BuildError, match=r"uv\.lock cannot be read as TOML"):
        build.lock_pins(tmp_path / "bad")


X86 = ("3.11.2", "x86_64")


@pytest.mark.parametrize(
    ("wants", "hosts", "machines", "builder", "error"),
    [
        (">=3.11", ["3.11.2", "3.11.2"], ["x86_64"], X86, None),
        ("", [], [], X86, None),
        ("~=3.10", ["3.11.2"], [], X86, None),
        (">=3.10,<4.0", ["3.11.2", "3.11.9"], [], X86, None),
        ("==3.11.*", ["3.11.2"], [], X86, None),
        (">=3.12", ["3.11.2"], [], ("3.12.1", "x86_64"),
         r"requires Python >=3\.12 .* app hosts run Python 3\.11\.2.*fastapi_app_python"),
        (">=3.11.4", ["3.11.2"], [], X86, r"app hosts run Python 3\.11\.2"),
        ("!=3.11.*", ["3.11.2"], [], X86, r"app hosts run Python 3\.11\.2"),
        ("~=3.12", ["3.11.2"], [], X86, r"app hosts run Python 3\.11\.2"),
        (">=3.11", ["3.11.2"], [], ("3.10.4", "x86_64"),
         r"controller builds with Python 3\.10\.4.*fastapi_app_build_python"),
        ("", ["3.12.1"], [], X86, "3.11 but the app hosts run 3.12.*fastapi_app_build_python"),
        ("", ["3.11.2", "3.12.1"], [], X86, r"different Pythons \(3\.11, 3\.12\)"),
        ("", ["3.11.2"], ["aarch64"], X86, "builds on x86_64 but the app hosts are aarch64"),
        ("3.11", ["3.11.2"], [], X86, "not a version specifier"),
        (">=3.*", ["3.11.2"], [], X86, "not a version specifier"),
    ],
)  # fmt: skip
def test_pythons_are_checked_before_anything_is_built(
    wants: str, hosts: list[str], machines: list[str], builder: tuple[str, str], error: str | None
) -> None:
    if error is None:
        build.check_pythons(wants, builder, hosts, machines)
    else:
        with pytest.raises(build.BuildError, match=error):
            build.check_pythons(wants, builder, hosts, machines)


def test_a_release_carries_the_files_the_project_names(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "app" / "alembic" / "versions" / "__pycache__").mkdir(parents=True)
    (project / "alembic.ini").write_text("[alembic]\nscript_location = app/alembic\n")
    (project / "app" / "alembic" / "env.py").write_text("# env\n")
    (project / "app" / "alembic" / "versions" / "0001_first.py").write_text("# first\n")
    (project / "app" / "alembic" / "versions" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    shipped = build.project_files(project, ["alembic.ini", "app/alembic"])
    assert [rel for _path, rel in shipped] == [
        "alembic.ini", "app/alembic/env.py", "app/alembic/versions/0001_first.py",
    ]  # fmt: skip
    for bad, error in [
        ("../etc", "not a path inside the project"),
        ("/etc/passwd", "not a path inside the project"),
        ("venv", "a name the release keeps for itself"),
        ("missing.ini", "does not exist in"),
    ]:
        with pytest.raises(build.BuildError, match=error):
            build.project_files(project, [bad])
    with pytest.raises(build.BuildError, match="fastapi_app_source is not a project directory"):
        build.project_files(None, ["alembic.ini"])


def test_an_explicit_release_id_names_one_build_shipped_as_it_is(tmp_path: Path) -> None:
    """Once built, an explicit id is not built again (no pip run): the same tarball ships."""
    (tmp_path / "a").mkdir()
    first = build.build(
        "tiny", str(tiny_wheel(tmp_path / "a")), str(tmp_path / "c"), release_id="v7"
    )
    (tmp_path / "b").mkdir()
    again = build.build(
        "tiny", str(tiny_wheel(tmp_path / "b", body="X = 2\n")), str(tmp_path / "c"),
        release_id="v7",
    )  # fmt: skip
    assert again == {**first, "changed": False}


def test_a_project_the_hosts_cannot_run_is_refused_before_pip_runs(tmp_path: Path) -> None:
    """pip would refuse it too, in words that name no variable: the check comes first."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\nrequires-python = ">=3.12"\n'
    )
    with pytest.raises(build.BuildError, match=r"requires Python >=3\.12 .*fastapi_app_python"):
        build.build("p", str(project), str(tmp_path / "c"), hosts_python=["3.11.2"])


def tiny_project(path: Path, body: str = "X = 1\n", pyproject_extra: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinyproj"\nversion = "1.0"\n'
        "[tool.setuptools]\npy-modules = ['tinyproj']\n" + pyproject_extra
    )
    (path / "tinyproj.py").write_text(body)
    return path


def no_pip(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"pip ran: {args}")


@pytest.mark.parametrize("git", [False, True], ids=["plain-directory", "git-work-tree"])
def test_an_unchanged_project_is_found_in_the_cache_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git: bool
) -> None:
    project = tiny_project(tmp_path / "proj")
    if git:
        (project / ".gitignore").write_text("build/\n*.egg-info/\n__pycache__/\nlocal.db\n")
        subprocess.run(["git", "init", "-q", str(project)], check=True)
    cache = str(tmp_path / "cache")
    first = build.build("p", str(project), cache)
    assert first["changed"] is True
    # What a build or a run leaves in the tree is not source: still found without pip.
    (project / "build" / "lib").mkdir(parents=True, exist_ok=True)
    (project / "__pycache__").mkdir(exist_ok=True)
    (project / "__pycache__" / "tinyproj.cpython-311.pyc").write_bytes(b"\0")
    if git:
        (project / "local.db").write_bytes(b"ignored by git")
    monkeypatch.setattr(build, "pip", no_pip)
    assert build.build("p", str(project), cache) == {**first, "changed": False}
    # One byte of source changed, same size: pip runs, another release.
    (project / "tinyproj.py").write_text("X = 2\n")
    with pytest.raises(AssertionError, match="pip ran"):
        build.build("p", str(project), cache)
    monkeypatch.undo()
    second = build.build("p", str(project), cache)
    assert second["changed"] is True and second["release"] != first["release"]


def test_a_version_from_version_control_always_runs_pip(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "scm", pyproject_extra="[tool.setuptools_scm]\n")
    assert build.source_fingerprint(project) is None
    assert build.source_fingerprint(tiny_project(tmp_path / "plain")) is not None
