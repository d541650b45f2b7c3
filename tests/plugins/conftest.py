"""The collection's plugins import each other as Ansible does (ansible_collections...)."""

from __future__ import annotations

import sys

from tests.helpers.modules import collection_path

if collection_path() not in sys.path:
    sys.path.insert(0, collection_path())
