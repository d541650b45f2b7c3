"""Scan a host's logs for secrets, with a positive control per log source.

"The secret is not in the log" proves nothing on a log the scan did not read: an empty journal,
a glob that matches no file, a directory that moved. So every source is scanned together with
a marker, a token known to be in it (planted by the test, or one the deploy legitimately
wrote), and a source passes only when the same command finds its marker there and no secret.
A source may have several markers, and must hold every one: a marker planted when the test
session started beside one planted just before the scan shows that the log still holds what
was written in between (a journal that rotated or lost the deploy's entries does not).

``scan_command`` is pure: one bash script for any host (``podman exec``, testinfra, or a local
``bash -c``), whose paths are parameters so that the unit tests run it on a temporary tree.
Needles travel hex-escaped (``$'\\x..'``) and reach grep through a pipe, so that no secret is
ever spelled out on a command line (the scan would otherwise find its own command, were it
logged) and no count is keyed by a secret in what a failing test prints.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LogSource:
    """A log: files (globs, plain or gzip-rotated) or a command that prints it (the journal)."""

    name: str
    files: tuple[str, ...] = ()
    command: str | None = None

    def __post_init__(self) -> None:
        if bool(self.files) == bool(self.command):
            raise ValueError(f"{self.name}: give files or a command, not both or neither")
        if not re.fullmatch(r"[\w .-]+", self.name):
            raise ValueError(f"{self.name!r}: a source name is words, dots and dashes")


# The logs a converged host keeps (the deploy's and its services').
JOURNAL = LogSource("journal", command="journalctl --no-pager -o cat")
POSTGRESQL = LogSource("postgresql", files=("/var/log/postgresql/*",))
NGINX_ACCESS = LogSource("nginx access", files=("/var/log/nginx/access.log*",))
NGINX_ERROR = LogSource("nginx error", files=("/var/log/nginx/error.log*",))
LETSENCRYPT = LogSource("letsencrypt", files=("/var/log/letsencrypt/*",))
DEPLOY_AUDIT = LogSource("fastapi-metal audit", files=("/var/log/fastapi-metal/*",))
# pgBackRest's logs on a db host (a file per stanza and command: backup, archive-push, restore,
# expire ...) and the restore record (role pgbackrest): its commands carry the repository's
# passphrase in their configuration.
PGBACKREST = LogSource("pgbackrest", files=("/var/log/pgbackrest/*",))
# Every host's journal on the monitoring host (role monitoring).
CENTRAL_JOURNAL = LogSource(
    "central journal", command="journalctl -D /var/log/journal/remote --no-pager -o cat"
)


@dataclass(frozen=True)
class SourceScan:
    files: int  # regular files read; -1 for a command source
    status: int  # exit status of the reader (zcat, journalctl ...)
    lines: int
    counts: tuple[int, ...]  # lines holding each needle, in the order of the needles


_GLOB_PART = re.compile(r"[\w.+@-]*[*?][\w.*?+@-]*")


def _glob(pattern: str) -> str:
    """``pattern`` for bash: literal path parts quoted, ``*``/``?`` parts left to expand."""
    if not pattern.startswith("/"):
        raise ValueError(f"{pattern}: an absolute path")
    parts = []
    for part in pattern.split("/"):
        if "*" in part or "?" in part:
            if not _GLOB_PART.fullmatch(part):
                raise ValueError(f"{pattern}: unsupported glob part {part!r}")
            parts.append(part)
        else:
            parts.append(shlex.quote(part) if part else "")
    return "/".join(parts)


def _ansi_c(needle: str) -> str:
    if not needle or "\n" in needle:
        raise ValueError("a needle is one non-empty line")
    return "$'" + "".join(f"\\x{b:02x}" for b in needle.encode()) + "'"


def scan_command(sources: Sequence[LogSource], needles: Sequence[str]) -> str:
    """A bash script printing, per source, ``SCAN <i> <files> <status> <lines> <count>...``."""
    lines = [
        "set -u; shopt -s nullglob",
        *(f"n{i}={_ansi_c(n)}" for i, n in enumerate(needles)),
        # grep -c prints 0 (and exits 1) when nothing matches: the count is what matters.
        "count() { grep -acF -f <(printf '%s\\n' \"$1\") || true; }",
    ]
    for i, source in enumerate(sources):
        if source.command:
            lines += ["nfiles=-1", f"rd() {{ {source.command}; }}"]
        else:
            globs = " ".join(_glob(p) for p in source.files)
            lines += [
                f'FILES=(); for f in {globs}; do [ -f "$f" ] && FILES+=("$f"); done',
                "nfiles=${#FILES[@]}",
                'rd() { if ((${#FILES[@]})); then zcat -f -- "${FILES[@]}"; fi; }',
            ]
        lines += [
            'nlines=$(rd | wc -l; exit "${PIPESTATUS[0]}"); status=$?',
            f'printf \'SCAN %s %s %s %s\' {i} "$nfiles" "$status" "$nlines"',
            *(f'printf \' %s\' "$(rd 2>/dev/null | count "$n{j}")"' for j in range(len(needles))),
            "printf '\\n'",
        ]
    return "\n".join(lines) + "\n"


def parse_scan(
    output: str, sources: Sequence[LogSource], needles: Sequence[str]
) -> dict[str, SourceScan]:
    """The ``SCAN`` lines of ``scan_command``'s output, by source name (missing: not scanned)."""
    found: dict[str, SourceScan] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) != 5 + len(needles) or fields[0] != "SCAN":
            continue
        i, nfiles, status, nlines, *counts = (int(f) for f in fields[1:])
        found[sources[i].name] = SourceScan(nfiles, status, nlines, tuple(counts))
    return found


# Per source name: its marker, or its markers (every one must be found).
Markers = Mapping[str, str | Sequence[str]]


def marker_tokens(marker: str | Sequence[str]) -> tuple[str, ...]:
    """A source's markers as a tuple (a plain string is one marker, not its characters)."""
    return (marker,) if isinstance(marker, str) else tuple(marker)


def scan_needles(secrets: Iterable[str], markers: Markers) -> list[str]:
    """What a scan looks for: the secrets first (named by position), then every marker."""
    return [*secrets, *(token for m in markers.values() for token in marker_tokens(m))]


def leak_problems(
    scans: Mapping[str, SourceScan],
    sources: Sequence[LogSource],
    markers: Markers,
    secrets: Sequence[str],
) -> list[str]:
    """Why the scan does not prove "no secret in these logs"; empty when it does.

    ``scans`` comes from a scan with the needles ``scan_needles(secrets, markers)``. Secrets
    are named by their position only, never by value.
    """
    needles = scan_needles(secrets, markers)
    problems = []
    for source in sources:
        scan = scans.get(source.name)
        if scan is None:
            problems.append(f"{source.name}: not scanned (the scan's output has no line for it)")
            continue
        what = " ".join(source.files) or source.command
        if scan.status != 0:
            problems.append(f"{source.name}: reading {what} failed (exit {scan.status})")
        if scan.files == 0:
            problems.append(f"{source.name}: no file matches {what}")
        elif scan.lines == 0:
            problems.append(f"{source.name}: {what} is empty")
        tokens = marker_tokens(markers.get(source.name, ()))
        if not tokens:
            problems.append(f"{source.name}: no marker to look for: the scan proves nothing")
        for marker in tokens:
            if scan.counts[needles.index(marker)] == 0:
                problems.append(
                    f"{source.name}: the marker {marker} is not found in {what}: the scan does"
                    " not read what the host logs, or lost what it logged"
                )
        for k, _secret in enumerate(secrets):
            if scan.counts[k]:
                problems.append(f"{source.name}: secret #{k + 1} is in {scan.counts[k]} line(s)")
    return problems


def scan_for_secrets(
    run: Callable[[str], str],
    sources: Sequence[LogSource],
    markers: Markers,
    secrets: Sequence[str],
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Run the scan (``run`` executes a bash script on the host and returns its stdout) until
    every marker is seen or ``timeout`` passes (journald and nginx write asynchronously), and
    return the problems of the last scan. A secret found is reported at once."""
    needles = scan_needles(secrets, markers)
    script = scan_command(sources, needles)
    deadline = time.monotonic() + timeout
    while True:
        problems = leak_problems(
            parse_scan(run(script), sources, needles), sources, markers, secrets
        )
        if not problems or any("secret #" in p for p in problems) or time.monotonic() > deadline:
            return problems
        sleep(0.5)
