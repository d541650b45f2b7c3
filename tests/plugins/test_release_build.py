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
        reqs = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    assert names == ["release.json", "requirements.txt", "wheelhouse/tinyapp-1.0-py3-none-any.whl"]
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
