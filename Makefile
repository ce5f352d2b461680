# gpufleet: `make demo` runs the toolkit on the local fleet lab; `make test` runs every check CI runs.
# Both set up what they need on a fresh Debian 12 machine (run as root).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
STAMPS := .stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# Debian packages: the lab (nspawn, debootstrap, ip, nft, ssh), HAProxy to validate
# configs on the controller, Packer, zstd for Ollama-style release archives, and gpg to
# sign the lab's stand-in of NVIDIA's apt repository.
APT_PACKAGES := python3 python3-venv python3-dev gcc systemd-container debootstrap iproute2 \
	nftables openssh-client haproxy packer zstd util-linux prometheus-node-exporter \
	gpg gpg-agent

LAB_STATE ?= /var/lib/gpufleet-lab
LAB_INVENTORY := $(LAB_STATE)/inventory

.PHONY: help deps demo test lint unit lab-test clean

help:
	@echo "make demo   bring the fleet lab up, show its inventory, apply the baseline, take it down"
	@echo "make test   ruff, ansible-lint (production), unit, stand-in and inventory tests, lab tests with molecule"
	@echo "make deps   install the Debian packages and the Python virtualenv only"

deps: $(STAMPS)/apt $(STAMPS)/venv

$(STAMPS)/apt: Makefile
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "deps: installing Debian packages"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: pyproject.toml constraints.txt $(STAMPS)/apt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "deps: installing Python packages into $(VENV)"
	@$(VENV)/bin/pip install -q --upgrade pip
	@$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

demo: deps
	@trap 'gpufleet lab down' EXIT; \
	gpufleet lab up; \
	echo "--- the fleet as the EC2 inventory sees it"; \
	ansible-inventory -i $(LAB_INVENTORY) --graph; \
	echo "--- every host answers over SSH"; \
	ansible -i $(LAB_INVENTORY) all -m ansible.builtin.ping -o; \
	echo "--- the baseline, applied to the whole fleet"; \
	ansible-playbook -i $(LAB_INVENTORY) playbooks/base.yml

lint: deps
	ruff check .
	ruff format --check .
	ansible-lint --profile production

unit: deps
	pytest tests/unit tests/standin tests/inventory tests/modules

lab-test: deps
	pytest tests/lab

test: lint unit lab-test

clean:
	-gpufleet lab down
	rm -rf $(VENV) $(STAMPS) .cache .pytest_cache .ruff_cache
