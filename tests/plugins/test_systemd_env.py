"""The env-file filter (plugins/filter/systemd.py). systemd reads a double-quoted value as a
POSIX shell reads a double-quoted string, without expansion; bash's reading of the same file
is the stand-in here (the byte-for-byte check against systemd itself runs in the fastapi_app
scenario, in the service and in every step)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_metal.stack.plugins.filter.systemd import systemd_env

NASTY = "pa$word`echo X`\"q\" 'sq' #x = é ü \\n\\ $(id) ${HOME} \t tab ~"


def read_back(path: Path, key: str) -> bytes:
    return subprocess.run(
        ["bash", "-c", f'set -a; . "$1"; printf %s "${key}"', "read", str(path)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize(
    "value", [NASTY, "", " leading and trailing ", "\\", '"', "$", "`", "plain", 8000, True]
)
def test_every_value_reads_back_byte_for_byte(tmp_path: Path, value: object) -> None:
    path = tmp_path / "env"
    path.write_text(systemd_env({"SECRET": value}), encoding="utf-8")
    assert read_back(path, "SECRET") == str(value).encode()


def test_the_file_is_utf8_as_is_sorted_one_line_per_key() -> None:
    text = systemd_env({"B": "é", "A": "x $y"})
    assert text == 'A="x \\$y"\nB="é"\n'


def test_the_read_back_sees_a_wrong_quoting(tmp_path: Path) -> None:
    """The control: the JSON quoting the role used before does not read back (the ``$word``
    is expanded, ``é`` stays an escape), so the check above can fail."""
    path = tmp_path / "env"
    path.write_text(f"SECRET={json.dumps(NASTY)}\n", encoding="utf-8")
    assert read_back(path, "SECRET") != NASTY.encode()


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"LOG LEVEL": "x"}, "the key 'LOG LEVEL' is not an environment variable name"),
        ({"1X": "x"}, "the key '1X' is not"),
        ({"X": "a\nb"}, "the value of X holds a newline"),
        ({"X": "a\rb"}, "the value of X holds a carriage return"),
        ({"X": "a\0b"}, "the value of X holds a NUL byte"),
        ({"X": {"a": 1}}, "the value of X is a dict"),
    ],
)
def test_what_cannot_be_written_is_refused_naming_the_key(
    variables: dict[str, object], words: str
) -> None:
    with pytest.raises(AnsibleFilterError, match=words) as caught:
        systemd_env(variables, "fastapi_app_env")
    assert "fastapi_app_env" in str(caught.value)
    assert "a\nb" not in str(caught.value)
