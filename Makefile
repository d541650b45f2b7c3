# fastapi-metal: the two commands an operator needs are `make lab` and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= /usr/bin/python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMPS    := .lab/stamps
# netavark + aardvark-dns by name: with --no-install-recommends podman would fall back to CNI
# networking without DNS, and no lab host could resolve another; netavark sets up the
# network's NAT with iptables, which nothing else pulls in (docs/lab.md).
APT_PACKAGES := podman runc netavark aardvark-dns iptables debootstrap uidmap python3-venv \
                python3-dev openssh-client openssl git postgresql-15 postgresql-client-15 \
                ca-certificates curl shellcheck
# Molecule scenarios run by `make test`: the lanes side by side (space between lanes, commas
# within one; each scenario owns its containers and network, and one lane alone leaves a core
# idle while Ansible waits on its hosts), then MOLECULE_LAST alone (the cluster's load tests
# measure what the machine serves). `make test-molecule MOLECULE_SCENARIOS="edge cluster"`:
# those alone, one after another.
MOLECULE_LANES ?= fastapi_app base,postgresql,edge,hardening
MOLECULE_LAST ?= cluster
MOLECULE_SCENARIOS ?=
# `make timings APPS=8`: after the two-host timings, scale the lab out to 8 app hosts and back.
APPS ?= 2

export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG  := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
export SSLYZE := $(CURDIR)/.venv-sslyze/bin/sslyze
# No task of the lab's or the tests' plays takes minutes: one that hangs (a service whose stop
# waits out Debian's hour, say) fails after 20 with its name, instead of the run going silent.
export ANSIBLE_TASK_TIMEOUT := 1200
# Plain logs: CI keeps them as text.
export NO_COLOR := 1
export PY_COLORS := 0
export ANSIBLE_FORCE_COLOR := 0

.PHONY: help setup lab lab-up lab-down lab-status lint sanity test test-app test-molecule test-zero-drop drills timings bench clean

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMPS)/apt: Makefile
	mkdir -p $(STAMPS)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	touch $@

$(STAMPS)/venv: pyproject.toml constraints.txt $(STAMPS)/apt
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	mkdir -p .ansible/collections/ansible_collections/fastapi_metal
	ln -sfn ../../../.. .ansible/collections/ansible_collections/fastapi_metal/stack
	touch $@

# sslyze pins an older cryptography than ansible-core's: it gets a venv of its own.
$(STAMPS)/sslyze: $(STAMPS)/apt
	[ -x .venv-sslyze/bin/python ] || $(PYTHON) -m venv .venv-sslyze
	.venv-sslyze/bin/pip install -q 'sslyze==6.3.1'
	touch $@

# promtool, for the alert rules' unit tests: Debian's prometheus package (the version the
# monitoring hosts run) unpacked under .lab/promtool, so no Prometheus runs on this machine.
$(STAMPS)/promtool: $(STAMPS)/apt
	rm -rf .lab/promtool && mkdir -p .lab/promtool
	cd .lab/promtool && apt-get download -qq prometheus 2>/dev/null && dpkg -x prometheus_*.deb root
	$(CURDIR)/.lab/promtool/root/usr/bin/promtool --version
	cd $(CURDIR)
	touch $@

setup: $(STAMPS)/venv $(STAMPS)/sslyze $(STAMPS)/promtool  ## Install apt packages, the project venv (.venv), sslyze's venv and promtool

lab-up: setup  ## Build the lab image (cached) and bring the lab hosts up
	$(PYTHON) lab/lab.py up

lab: lab-up  ## Set everything up and converge site.yml on the local lab
	$(BIN)/ansible-playbook playbooks/site.yml -i inventories/lab
	@echo
	$(PYTHON) lab/lab.py health
	@echo
	@echo "The lab is converged. Next:"
	@echo "  podman exec -it app1 bash          # look inside a host"
	@echo "  $(BIN)/ansible all -m ansible.builtin.ping   # every host over SSH"
	@echo "  make lab-status / make lab-down"

lab-down:  ## Remove the lab's containers and network (the image stays cached)
	$(PYTHON) lab/lab.py down

lab-status:  ## Show the lab's hosts
	$(PYTHON) lab/lab.py status

lint: setup  ## ruff, mypy, yamllint, ansible-lint (production profile)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint

# ansible-test sanity: the collection must sit at ansible_collections/<namespace>/<name>, so a
# copy of the checkout's files goes there (tests/sanity/ignore-2.19.txt says what it may
# skip). Each test runs in a venv of its own with the versions ansible-test pins, from PyPI;
# ansible-test puts pip into those venvs with a get-pip script it downloads from
# ci-files.testing.ansible.com, out of reach here: tests/sanity/get_pip.py stands in, saved
# where ansible-test looks for the script it would have downloaded.
sanity: setup  ## ansible-test sanity on the collection (pylint, validate-modules, ansible-doc, ...)
	pip=$$($(BIN)/python -c 'import types; from ansible_test._internal.python_requirements import get_venv_packages as g; print(g(types.SimpleNamespace(version="3.11"))["pip"])')
	mkdir -p ~/.ansible/test/cache
	cp tests/sanity/get_pip.py ~/.ansible/test/cache/get_pip_$${pip//./_}.py
	dest=.lab/sanity/ansible_collections/fastapi_metal/stack
	rm -rf .lab/sanity && mkdir -p $$dest
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C $$dest
	cd $$dest && git init -q . && git add -A
	$(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --skip-test pslint

test-app: setup  ## pytest: the service against a real PostgreSQL, the static security checks, the modules, the alert rules (promtool)
	$(BIN)/pytest tests/app tests/security tests/roles tests/plugins tests/tools tests/monitoring tests/lab --ignore=tests/lab/cluster -q

test-molecule: setup  ## molecule test: MOLECULE_LANES side by side, then MOLECULE_LAST (or MOLECULE_SCENARIOS in order)
	$(PYTHON) lab/lab.py image
	scenario() {
	  local start=$$(date +%s)
	  $(BIN)/molecule test -s "$$1" || return 1
	  echo "molecule scenario $$1 passed in $$(( $$(date +%s) - start )) s"
	}
	lane() { local s; for s in $${1//,/ }; do scenario "$$s" || return 1; done; }
	if [ -n "$(MOLECULE_SCENARIOS)" ]; then lane "$(MOLECULE_SCENARIOS)"; exit; fi
	# The first lane writes here; each other one to its log, shown once it is done.
	mkdir -p .lab/logs
	pids=(); logs=(); main=
	for l in $(MOLECULE_LANES); do
	  if [ -z "$$main" ]; then main=$$l; continue; fi
	  logs+=(".lab/logs/molecule-$${l//,/-}.log")
	  lane "$$l" > "$${logs[-1]}" 2>&1 & pids+=($$!)
	done
	rc=0; lane "$$main" || rc=1
	for i in "$${!pids[@]}"; do
	  wait "$${pids[$$i]}" || rc=1
	  echo "---- run beside it: $${logs[$$i]}"
	  cat "$${logs[$$i]}"
	done
	[ $$rc = 0 ] || { echo "a molecule scenario failed (above)"; exit 1; }
	lane "$(MOLECULE_LAST)"

timings: lab  ## Time a facts-only play, a site.yml rerun and rolling upgrades on the lab; APPS=8: then scale out to 8 app hosts and back (.lab/results/timings.json)
	$(BIN)/python -m tests.lab.timings --apps $(APPS)

# matplotlib draws the benchmark's timeline: installed into the project venv by this target
# alone (nothing else needs it).
$(STAMPS)/bench: $(STAMPS)/venv
	$(BIN)/pip install -q -c constraints.txt matplotlib
	touch $@

bench: lab $(STAMPS)/bench  ## Capacity, overload, a rolling upgrade beside the naive baseline on the lab (bench/results/<date>.json + .png)
	$(BIN)/python -m tests.lab.bench

test-zero-drop: lab  ## The cluster verify tests (rolling upgrades under load, 0 failed requests) on the local lab
	$(BIN)/pytest -p no:cacheprovider tests/lab/cluster -v -s -m "not drill"

drills: lab  ## Every cluster test on the local lab, the fault drills CI leaves out included (they build on the others)
	$(BIN)/pytest -p no:cacheprovider tests/lab/cluster -v -s

test: lint sanity test-app test-molecule  ## The whole suite, as CI runs it

clean: lab-down  ## Remove the lab, the venv and caches
	rm -rf $(VENV) .venv-sslyze .lab .pytest_cache .mypy_cache .ruff_cache .ansible
