#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""nginx runs the configuration on disk, and no answering upstream server is left drained."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nginx_live
short_description: Make nginx run the nginx.conf on disk and undrain every server that answers
description:
  - Runs on an lb host that the C(fastapi_metal.stack.nginx) role configured.
  - nginx cannot tell which configuration it runs, so every reload or start made by this
    collection records the sha256 of the nginx.conf it loaded. When the file differs from
    that record (a run wrote it and died before its reload), nginx is tested and reloaded,
    and the call returns once new workers serve.
  - Every drained upstream server (kernel state a rollout cut short left behind) that
    answers an HTTP request directly goes back in service; one that does not answer stays
    drained and is listed in C(kept_drained) for the app's own roll to heal.
  - Not a handler on purpose, so configuration on disk that is not live never outlasts a run.
options: {}
extends_documentation_fragment:
  - fastapi_metal.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Ensure nginx runs the configuration on disk
  fastapi_metal.stack.nginx_live:
"""

RETURN = r"""
reloaded:
  description: Whether nginx was (or in check mode would be) reloaded or started.
  returned: success
  type: bool
undrained:
  description: The upstream servers put back in service.
  returned: success
  type: list
  elements: str
kept_drained:
  description: Drained servers left drained, each with why (it does not answer).
  returned: success
  type: dict
removed:
  description: Drain entries of addresses that are no upstream server any more.
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_metal.stack.plugins.module_utils import nginx_ops


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    try:
        with nginx_ops.exclusive():
            result = nginx_ops.converge(module.check_mode)
    except nginx_ops.NginxOpsError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
