# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""What the attributes of the collection's modules mean; each module says its support."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and report the change it would make, without making it.
  diff_mode:
    description: Returns the difference between the previous and the new state in diff mode.
"""

    ACTION = r"""
attributes:
  action:
    description: Runs on the controller (an action plugin); nothing is sent to the host.
"""
