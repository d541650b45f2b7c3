"""Test suite. A package, so that ``tests/app`` can never shadow the ``app`` package."""
