"""TCP reachability probes run on a lab host, and what their answers prove.

A firewall check asserts "timeout" (the packets were dropped) where a port must be closed.
That verdict is only worth something when the probe could have said otherwise: a name that
did not resolve, a host with no route to it, or a probe that did not run are not "dropped",
and a probe that sees nothing open at all may be cut off from the network altogether. So
``PROBE`` names those cases apart, and ``probe_problems`` fails a probe that gave anything but
a firewall verdict, or had no open target (its positive control) among the targets asked.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence

# Runs on the probing host (python3 of Debian): resolve, then connect to every host:port at once.
# "open"; "refused" (a RST: the firewall let the packet in); "timeout" (no answer: dropped);
# anything else is named as what it is: "unresolved: ...", "unreachable: ..." (no route:
# EHOSTUNREACH/ENETUNREACH), "error: ...".
PROBE = r"""
import errno, json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target, timeout):
    host, port = target.rsplit(":", 1)
    try:
        addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except socket.gaierror as e:
        return f"unresolved: {e}"
    try:
        socket.create_connection(addr, timeout=timeout).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"unreachable: {e}"
        return f"error: {e}"

if __name__ == "__main__":
    timeout, targets = float(sys.argv[1]), sys.argv[2:]
    with ThreadPoolExecutor(len(targets)) as pool:
        verdicts = pool.map(lambda t: probe(t, timeout), targets)
        print(json.dumps(dict(zip(targets, verdicts))))
"""
VERDICTS = frozenset({"open", "refused", "timeout"})


def probe_command(targets: Sequence[str], timeout: float = 1.5) -> str:
    """The shell command that probes ``targets`` ("host:port") and prints a JSON verdict map."""
    if not targets:
        raise ValueError("no target")
    return shlex.join(["python3", "-c", PROBE, str(timeout), *targets])


def probe_problems(seen: Mapping[str, str], targets: Sequence[str]) -> list[str]:
    """Why ``seen`` is no firewall evidence; empty when every verdict means something."""
    problems = [f"{t}: not probed" for t in targets if t not in seen]
    problems += [f"{t}: {v} (not a firewall verdict)" for t, v in seen.items() if v not in VERDICTS]
    if "open" not in seen.values():
        problems.append(
            f"nothing open among {list(targets)}: without a positive control beside it,"
            " a timeout proves nothing"
        )
    return problems


def expected_verdicts(targets: Iterable[str], open_ports: Collection[int]) -> dict[str, str]:
    """What a probe of ``targets`` must see through a firewall that admits ``open_ports`` only:
    "open" there, and "timeout" (dropped) everywhere else. Compare the whole map for equality:
    a "refused" is a packet the firewall let in, which "not open" would accept."""
    return {t: "open" if int(t.rsplit(":", 1)[1]) in open_ports else "timeout" for t in targets}
