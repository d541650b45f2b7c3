#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Drain one upstream server of nginx, or put it back in service, without a reload."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nginx_upstream
short_description: Drain an nginx upstream server, or put it back, without reloading nginx
description:
  - Runs on an lb host that the C(fastapi_metal.stack.nginx) role configured.
  - C(state=drained) puts the server's address and port into an nftables set whose rule
    refuses new connections from this host with a TCP reset, so nginx passes every request
    to another server; requests already on the server finish. No reload, since a reload would
    close idle client keep-alive connections, and a request racing that close is lost.
  - C(state=serving) takes it out of the set and returns only once nginx sent the server a
    request through its loopback probe listener and the server answered, so nginx counts it
    healthy again in every worker and draining the next server cannot leave none.
  - A C(unix:/path) server is marked C(down) in nginx.conf and nginx reloads gracefully.
  - One call per lb host, idempotent; the result says what the server was before.
options:
  server:
    description: The upstream server as nginx.conf names it (C(10.0.0.5:8000), C(unix:/run/a.sock)).
    type: str
    required: true
  state:
    description: C(drained) refuses new connections to the server; C(serving) puts it back.
    type: str
    choices: [drained, serving]
    default: serving
extends_documentation_fragment:
  - fastapi_metal.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Drain this app host on every lb
  fastapi_metal.stack.nginx_upstream:
    server: "{{ ansible_host }}:8000"
    state: drained
  delegate_to: "{{ item }}"
  loop: "{{ groups['lb'] }}"
"""

RETURN = r"""
previous:
  description: The server's state before the call.
  returned: success
  type: str
  sample: serving
state:
  description: The server's state after the call (in check mode, the state it would have).
  returned: success
  type: str
  sample: drained
waited_s:
  description: Seconds until nginx had a request answered by the server again (after an undrain).
  returned: when the server was put back
  type: float
  sample: 2.14
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_metal.stack.plugins.module_utils import nginx_ops

WORDS = {"down": "drained", "up": "serving"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "server": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["drained", "serving"], "default": "serving"},
        },
        supports_check_mode=True,
    )
    server, state = module.params["server"], module.params["state"]
    try:
        with nginx_ops.exclusive():
            result = nginx_ops.upstream(
                server, "down" if state == "drained" else "up", module.check_mode
            )
    except nginx_ops.NginxOpsError as exc:
        module.fail_json(msg=str(exc), server=server)
    previous = WORDS[str(result["previous"])]
    out = {
        "changed": bool(result["changed"]),
        "server": server,
        "previous": previous,
        "state": state,
        "diff": {"before": f"{server}: {previous}\n", "after": f"{server}: {state}\n"},
    }
    if "waited_s" in result:
        out["waited_s"] = result["waited_s"]
    module.exit_json(**out)


if __name__ == "__main__":
    main()
