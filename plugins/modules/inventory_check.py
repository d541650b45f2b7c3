#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
# The documentation of an action plugin (plugins/action/inventory_check.py), run on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: inventory_check
short_description: Check an inventory and the extra vars against the collection's rules
description:
  - Runs on the controller without connecting to the host (delegate it to localhost in a play
    that gathers no facts), so a bad inventory fails before any host is touched.
  - Checks the form of every public variable the inventory or the extra vars set on this host
    (ports, names, release ids, nginx times and sizes, addresses, rates...), the rules across
    variables (a database for the app, server names and a contact address on lb hosts, files
    that must exist on the controller, no secret in the plain environment...), the groups the
    playbooks need, and that every vault_* variable decrypts.
  - Every problem of the host is reported at once, naming the variable, the expected form
    with an example, and what was got. Secrets are tested, never quoted.
  - The rules live in plugins/plugin_utils/inventory_rules.py. The roles run the same check
    on their own variables (O(prefixes)), defaults included.
options:
  prefixes:
    description:
      - Check only the variables starting with these prefixes (a role's own, e.g. C(nginx_)),
        whatever the host's groups, and skip the vault and groups checks.
      - Empty checks everything the inventory and the extra vars set, by the host's groups.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - fastapi_metal.stack.attributes
  - fastapi_metal.stack.attributes.action
attributes:
  action:
    support: full
  check_mode:
    support: full
  diff_mode:
    support: none
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Check the inventory before any host is touched
  hosts: all
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: Check the inventory and the extra vars
      fastapi_metal.stack.inventory_check:
      delegate_to: localhost
"""

RETURN = r"""
checked:
  description: The variables this host sets that have a form to match.
  returned: always
  type: list
  elements: str
problems:
  description: Each problem found, one sentence each.
  returned: failure
  type: list
  elements: str
"""
