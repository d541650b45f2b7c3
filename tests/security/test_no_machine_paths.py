"""What ships (the roles, plugins, playbooks, docs and the collection's metadata) names no
path of one developer's machine: no home directory, no checkout, no pytest temporary
directory, no lab directory by its absolute path. Such a path leaks who built it and sends
an operator to a file that is not there."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.lab.ansible_run import ROOT

SHIPPED = ("roles", "plugins", "playbooks", "docs", "meta", "README.md", "galaxy.yml")
# An absolute path (a "/" that does not continue a word, a relative path or a URL's host)
# into a home or a checkout, pytest's temporary directories, or a lab directory anywhere.
MACHINE_PATH = re.compile(
    r"(?<![\w.~:/-])"
    r"(/(?:root|home|Users|work)/[^\s'\"`)]*"
    r"|/tmp/pytest[^\s'\"`)]*"
    r"|/[^\s'\"`)]*/\.lab(?:/[^\s'\"`)]*)?)"
)


def shipped_files() -> list[str]:
    """The shipped paths git knows: tracked, and new files not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SHIPPED],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted({name for name in listed.stdout.splitlines() if (ROOT / name).is_file()})


@pytest.mark.parametrize(
    "text",
    [
        "e.g. /work/main/.lab/pebble/ca.pem; is not a file",
        "certbot_ca_bundle: /srv/ci/fastapi-metal/.lab/pebble/ca.pem",
        "cache: /home/alice/.cache/fastapi-metal/releases",
        "src: '/root/src/fastapi-metal/tests/fixtures/tinyapp'",
        "see `/Users/bob/fastapi-metal/README.md`",
        "written to /tmp/pytest-of-root/pytest-7/test_x0/extra.json",
        "path=/work/fastapi-metal/inventories/lab",
    ],
)
def test_the_rule_sees_a_machine_path(text: str) -> None:
    assert MACHINE_PATH.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "e.g. /etc/ssl/certs/my-acme-ca.pem",
        "counts and latencies land in `.lab/results/*.json`",
        "Pebble's CA is made in .lab/pebble/ca.pem",
        "default: ~/.cache/fastapi-metal/releases",
        "/var/lib/pgbackrest, /opt/notes/current, /var/log/fastapi-metal/notes-deploys.jsonl",
        "https://example.com/home/page and http://lab.test/work/queue",
        "roles/fastapi_app/files/home/x",
        "root's home is /root, a user's /home",  # directories of every machine, not a checkout
    ],
)
def test_the_rule_leaves_project_paths_alone(text: str) -> None:
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)


def test_no_shipped_file_names_a_path_of_one_machine() -> None:
    files = shipped_files()
    assert "roles/certbot/tasks/preflight.yml" in files and "README.md" in files, files[:20]
    found = []
    for name in files:
        text = (ROOT / name).read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{name}:{number}: {m[0]}" for m in MACHINE_PATH.finditer(line)]
    assert found == [], "a path of one machine in what ships; write a neutral example"
