"""The log scan of the lab's "no secret in any log" tests (tests/helpers/logscan.py), run on a
temporary tree here: it fails on a log it cannot have read, and finds a secret where it is."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from tests.helpers.logscan import (
    LogSource,
    leak_problems,
    parse_scan,
    scan_command,
    scan_for_secrets,
    scan_needles,
)

SECRET = "lab-db-pass-1"
OTHER_SECRET = "fm-sec-0123456789abcdef"
MARKER = "fm-logscan-5eed"
SESSION_MARKER = "fm-session-0a11"  # planted when the test session started
AUDIT_ID = "3f2c9a6e-0000-4000-8000-000000000001"  # a deploy id, legitimately in the audit log


def bash(script: str) -> str:
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A host's logs, under a directory whose name needs quoting."""
    root = tmp_path / "it's a host"
    for d in ("nginx", "postgresql", "letsencrypt", "fastapi-metal"):
        (root / d).mkdir(parents=True)
    (root / "journal.txt").write_text(f"Started nginx.service.\nfm-log-scan: {MARKER}\n")
    (root / "nginx/access.log").write_text(f'{{"uri":"/metrics?{MARKER}","status":403}}\n')
    with gzip.open(root / "nginx/access.log.2.gz", "wt") as f:
        f.write('{"uri":"/health","status":200}\n')
    (root / "nginx/error.log").write_text(f'access forbidden by rule, "GET /metrics?{MARKER}"\n')
    (root / "postgresql/postgresql-15-main.log").write_text(
        f'ERROR:  column "{MARKER}" does not exist\n'
    )
    (root / "letsencrypt/letsencrypt.log").write_text(f"fm-log-scan marker {MARKER}\n")
    (root / "fastapi-metal/notes-deploys.jsonl").write_text(f'{{"id": "{AUDIT_ID}"}}\n')
    return root


def sources(root: Path) -> list[LogSource]:
    return [
        LogSource("journal", command=f"cat {str(root / 'journal.txt')!r}"),
        LogSource("nginx access", files=(f"{root}/nginx/access.log*",)),
        LogSource("nginx error", files=(f"{root}/nginx/error.log*",)),
        LogSource("postgresql", files=(f"{root}/postgresql/*",)),
        LogSource("letsencrypt", files=(f"{root}/letsencrypt/*",)),
        LogSource("fastapi-metal audit", files=(f"{root}/fastapi-metal/*",)),
    ]


def markers(root: Path) -> dict[str, str | tuple[str, ...]]:
    found: dict[str, str | tuple[str, ...]] = {s.name: MARKER for s in sources(root)}
    found["fastapi-metal audit"] = AUDIT_ID
    return found


def check(
    root: Path,
    srcs: list[LogSource] | None = None,
    marks: dict[str, str | tuple[str, ...]] | None = None,
) -> list[str]:
    srcs = srcs or sources(root)
    secrets = [SECRET, OTHER_SECRET]
    marks = marks or markers(root)
    needles = scan_needles(secrets, marks)
    return leak_problems(
        parse_scan(bash(scan_command(srcs, needles)), srcs, needles), srcs, marks, secrets
    )


def test_every_source_read_and_marked_without_a_secret_passes(tree: Path) -> None:
    assert check(tree) == []


def test_the_counts_per_source(tree: Path) -> None:
    srcs = sources(tree)
    needles = [SECRET, MARKER]
    scans = parse_scan(bash(scan_command(srcs, needles)), srcs, needles)
    assert {name: (s.files, s.status, s.lines, s.counts) for name, s in scans.items()} == {
        "journal": (-1, 0, 2, (0, 1)),
        "nginx access": (2, 0, 2, (0, 1)),  # the gzip-rotated file read too
        "nginx error": (1, 0, 1, (0, 1)),
        "postgresql": (1, 0, 1, (0, 1)),
        "letsencrypt": (1, 0, 1, (0, 1)),
        "fastapi-metal audit": (1, 0, 1, (0, 0)),
    }


def test_an_empty_journal_fails_where_the_old_check_passed(tree: Path) -> None:
    (tree / "journal.txt").write_text("")
    # The old check: `{ journalctl ...; cat ...; } | grep -cF -- SECRET` printed 0: "no secret".
    old = subprocess.run(
        ["bash", "-c", f"cat {str(tree / 'journal.txt')!r} | grep -cF -- {SECRET}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert old.stdout.strip() == "0"
    problems = check(tree)
    assert problems == [
        f"journal: cat {str(tree / 'journal.txt')!r} is empty",
        f"journal: the marker {MARKER} is not found in cat {str(tree / 'journal.txt')!r}: the"
        " scan does not read what the host logs, or lost what it logged",
    ]


def test_a_log_directory_with_no_file_fails(tree: Path) -> None:
    for f in (tree / "letsencrypt").iterdir():
        f.unlink()
    problems = check(tree)
    assert problems[0] == f"letsencrypt: no file matches {tree}/letsencrypt/*"
    assert "letsencrypt: the marker" in problems[1]
    assert len(problems) == 2


def test_a_log_the_scan_does_not_read_fails(tree: Path) -> None:
    # The audit log moved: the scan reads an empty directory, the deploy id is elsewhere.
    (tree / "fastapi-metal").rename(tree / "fastapi-metal.moved")
    (tree / "fastapi-metal").mkdir()
    problems = check(tree)
    assert [p.split(":")[0] for p in problems] == ["fastapi-metal audit"] * 2


def test_a_journal_that_lost_what_was_logged_since_the_session_started_fails(
    tree: Path,
) -> None:
    # The session-start marker and the fresh one, both required of the journal.
    both = markers(tree) | {"journal": (SESSION_MARKER, MARKER)}
    journal = tree / "journal.txt"
    journal.write_text(f"fastapi-metal-test: {SESSION_MARKER}\ndeploy ...\nfm-log-scan: {MARKER}\n")
    assert check(tree, marks=both) == []
    # The journal rotated away (or never kept, volatile storage) what the session and its
    # deploys logged: only the marker planted just before the scan is left. The fresh marker
    # alone passes; the session-start marker fails the scan.
    journal.write_text(f"fm-log-scan: {MARKER}\n")
    assert check(tree) == []
    assert check(tree, marks=both) == [
        f"journal: the marker {SESSION_MARKER} is not found in cat {str(journal)!r}: the scan"
        " does not read what the host logs, or lost what it logged"
    ]


def test_every_marker_of_a_source_is_a_needle_and_a_string_is_one_marker() -> None:
    marks = {"journal": (SESSION_MARKER, MARKER), "nginx error": MARKER, "none": ()}
    assert scan_needles([SECRET], marks) == [SECRET, SESSION_MARKER, MARKER, MARKER]


def test_a_source_with_an_empty_marker_list_fails(tree: Path) -> None:
    marks = markers(tree) | {"journal": ()}
    assert check(tree, marks=marks) == ["journal: no marker to look for: the scan proves nothing"]


def test_a_source_without_a_marker_fails(tree: Path) -> None:
    srcs = sources(tree)
    needles = [SECRET, MARKER]
    scans = parse_scan(bash(scan_command(srcs, needles)), srcs, needles)
    problems = leak_problems(scans, srcs, {"journal": MARKER}, [SECRET])
    assert "nginx error: no marker to look for: the scan proves nothing" in problems


def test_a_secret_in_a_rotated_gzip_log_is_found_and_not_printed(tree: Path) -> None:
    with gzip.open(tree / "nginx/access.log.2.gz", "at") as f:
        f.write(f'{{"uri":"/login?password={OTHER_SECRET}"}}\n')
    problems = check(tree)
    assert problems == ["nginx access: secret #2 is in 1 line(s)"]


@pytest.mark.parametrize("where", ["journal.txt", "postgresql/postgresql-15-main.log"])
def test_a_secret_in_the_journal_or_a_log_file_is_found(tree: Path, where: str) -> None:
    with (tree / where).open("a") as f:
        f.write(f"connection string postgresql://notes:{SECRET}@db1/notes\n")
    source = "journal" if where == "journal.txt" else "postgresql"
    assert check(tree) == [f"{source}: secret #1 is in 1 line(s)"]


def test_a_log_that_cannot_be_read_fails(tree: Path) -> None:
    (tree / "nginx/access.log.2.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    assert check(tree) == [
        f"nginx access: reading {tree}/nginx/access.log* failed (exit 1)",
    ]


def test_no_needle_is_spelled_out_in_the_script(tree: Path) -> None:
    script = scan_command(sources(tree), [SECRET, OTHER_SECRET, MARKER])
    assert SECRET not in script and OTHER_SECRET not in script and MARKER not in script


def test_a_needle_with_quotes_and_spaces_is_matched_literally(tree: Path) -> None:
    needle = "p'a ss\"$(touch x)*"
    (tree / "journal.txt").write_text(f"a {needle} b\nno\n")
    srcs = sources(tree)[:1]
    scans = parse_scan(bash(scan_command(srcs, [needle, "a "])), srcs, [needle, "a "])
    assert scans["journal"].counts == (1, 1)
    assert not (Path.cwd() / "x").exists()


@pytest.mark.parametrize("pattern", ["relative/*", "/var/log/$(id)*", "/var/log/[ab]*"])
def test_unsafe_globs_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        scan_command([LogSource("x", files=(pattern,))], ["n"])


def test_the_scan_waits_for_a_marker_written_late(tree: Path) -> None:
    journal = tree / "journal.txt"
    journal.write_text("Started.\n")
    calls = []

    def run(script: str) -> str:
        calls.append(script)
        if len(calls) == 3:
            journal.write_text(f"Started.\n{MARKER}\n")
        return bash(script)

    srcs = sources(tree)[:1]
    problems = scan_for_secrets(run, srcs, {"journal": MARKER}, [SECRET], sleep=lambda _: None)
    assert problems == [] and len(calls) == 3


def test_the_scan_gives_up_on_a_marker_never_written(tree: Path) -> None:
    (tree / "journal.txt").write_text("Started.\n")
    srcs = sources(tree)[:1]
    problems = scan_for_secrets(
        bash, srcs, {"journal": MARKER}, [SECRET], timeout=0.2, sleep=lambda _: None
    )
    assert len(problems) == 1 and "the marker" in problems[0]
