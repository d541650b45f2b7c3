"""Stands in for the get-pip.py that ansible-test downloads from ci-files.testing.ansible.com
(out of reach here) to put pip into each sanity test's virtual environment: pip from the
interpreter's own ensurepip, then the packages ansible-test asks for (its pinned pip) from
the configured index. `make sanity` saves it where ansible-test looks for that script."""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
