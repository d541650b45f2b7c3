"""Root conftest: loaded by every pytest run whose rootdir is this repository (pyproject.toml's
[tool.pytest.ini_options]): ``make test-app``, ``make test-zero-drop`` and the testinfra verify
step of every molecule scenario (molecule runs pytest on ``molecule/<scenario>/tests``, or on
``tests/lab/cluster``, and pytest loads the conftest.py of every directory from the rootdir
down to the tests).

Keep it to plugins that every one of those runs needs. Fixtures belong in tests/conftest.py
(or a scenario's own conftest.py).
"""

# A skipped or xfailed test fails the run (see the module's docstring).
pytest_plugins = ["tests.helpers.noskip"]
