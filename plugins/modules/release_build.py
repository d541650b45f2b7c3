#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
# The documentation of an action plugin (plugins/action/release_build.py), run on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: release_build
short_description: Build a release (the app's wheels, pinned with hashes) on the controller
description:
  - Runs on the controller whatever the host; the same tarball then goes to every app host,
    which installs it with C(pip install --no-index --require-hashes), byte for byte.
  - O(source) is a project directory, a wheel file or a PEP 508 requirement; O(server)
    requirements (the app server) are resolved with it.
  - The release id defaults to C(<version>-<key>), the key hashing the app wheel's content,
    the constraints, the server requirements and the controller's Python, so the same code gives
    the same id, and a second call finds the tarball in O(cache) and builds nothing.
options:
  name:
    description: The app's name (a folder of O(cache)).
    type: str
    required: true
  source:
    description: A project directory, a wheel file, or a PEP 508 requirement.
    type: str
    required: true
  cache:
    description: Controller directory keeping built tarballs.
    type: str
    required: true
  constraints:
    description: A pip constraints file applied to the build.
    type: str
    default: ""
  release:
    description: A release id to use instead of the computed one.
    type: str
    default: ""
  server:
    description: Requirements resolved with the app's (gunicorn, uvicorn-worker).
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
    details: The build only writes to the controller's cache; it runs in check mode too.
  diff_mode:
    support: none
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Build the release once
  fastapi_metal.stack.release_build:
    name: notes
    source: ./app
    cache: ~/.cache/fastapi-metal/releases
    server: [gunicorn>=23, uvicorn-worker>=0.3]
  run_once: true
"""

RETURN = r"""
release:
  description: The release id.
  returned: success
  type: str
  sample: 0.3.0-1f2e3d4c5b
package:
  description: The app's distribution name.
  returned: success
  type: str
version:
  description: The app's version.
  returned: success
  type: str
tarball:
  description: The release tarball on the controller (wheelhouse/, requirements.txt, release.json).
  returned: success
  type: str
wheels:
  description: Wheels in the release.
  returned: success
  type: int
key:
  description: The content hash the default id is made from.
  returned: success
  type: str
"""
