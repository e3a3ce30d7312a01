# The two commands README.md promises: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: venv lint sanity unit test-fast lab-tests molecule scenario snapshot test-lab test-ubuntu test demo lab-down bench bench-provision bench-backup bench-release soak clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lab,gate]'
	touch $@

lint: venv
	ansible-lint

sanity: venv
	python tests/sanity/run_sanity.py

unit: venv
	pytest tests/unit

# The tiers (tests/suite.py prints each tier's time and ends with one summary line of every test
# it ran). test-fast: lint, sanity and unit tests, no lab (under 2 minutes once sanity's
# environments exist). test: everything, as CI runs it; the lab jobs run OPSPACK_TEST_JOBS at a time.
test-fast: venv
	python tests/suite.py fast

test: venv
	python tests/suite.py fast lab

# The lab tier alone: every Molecule scenario and tests/lab.
test-lab: venv
	python tests/suite.py lab

# Ubuntu 24.04 LTS: provision, release lifecycle, backups and drills on lab hosts built from the
# Ubuntu archive, which the test machines are not promised: its own target, failing (never
# skipping) when the archive cannot be reached (OPSPACK_LAB_UBUNTU_MIRROR names a mirror).
test-ubuntu: venv
	python tests/suite.py ubuntu

# End-to-end tests of the lab CLI and of provisioning through ansible-runner; they fail (never skip)
# when the lab cannot start.
lab-tests: venv
	pytest tests/lab

molecule: test-lab

# One scenario from zero to verified: make scenario S=release-lifecycle (docs/development/testing.md has the
# loop for working against a lab that stays up).
S ?= provision
scenario: venv
	molecule test -s $(S)

# The provisioned-host snapshot the non-provisioning scenarios start from (built when missing).
snapshot: venv
	python -m opspack.testing.snapshot ensure

# The main job end to end on the built-in lab: two fresh VPSes become production hosts, the
# sample site is deployed (1.0.0), upgraded (2.0.0, a migration) and rolled back, and the
# records show what happened.
LAB_DIR := inventories/lab
SITE_VARS := -e @inventories/lab-site.yml -e @$(LAB_DIR)/operator.yml
demo: venv
	opspack lab up --hosts 2
	printf 'access_operator_user: ops\naccess_operator_ssh_keys:\n  - "%s"\n' "$$(cat $(LAB_DIR)/id_ed25519.pub)" > $(LAB_DIR)/operator.yml
	ansible-playbook opspack.platform.provision $(SITE_VARS)
	python tests/sample_site/build_releases.py $(LAB_DIR)/sample > /dev/null
	ansible-playbook opspack.platform.deploy $(SITE_VARS) -e release_site=blog -e release_version=1.0.0 -e release_source=$(LAB_DIR)/sample/1.0.0
	ansible-playbook opspack.platform.deploy $(SITE_VARS) -e release_site=blog -e release_version=2.0.0 -e release_source=$(LAB_DIR)/sample/2.0.0
	ansible-playbook opspack.platform.rollback $(SITE_VARS) -e release_site=blog
	opspack lab report
	opspack matrix
	opspack history

# Speed figures as ratios to a baseline measured in the same run (never timed tests).
bench: bench-provision bench-backup bench-release

# OS=debian12|debian13 picks the hosts' target (default: the lab's, debian13).
bench-provision: venv
	OPSPACK_LAB_OS=$(OS) python bench/provision.py

bench-backup: venv
	python bench/backup.py

bench-release: venv
	python bench/release.py

# The release lifecycle's state sequence, long: hundreds of seeded random deploys, rollbacks,
# maintenance switches and killed runs on a lab host, the invariants checked after each step.
# It prints the seed, the steps run and the invariant checks passed (SOAK_SEED=<seed> replays one).
SOAK_STEPS ?= 300
SOAK_SEED ?=
soak: venv
	OPSPACK_SOAK=1 OPSPACK_SEQUENCE_STEPS=$(SOAK_STEPS) OPSPACK_SEQUENCE_SEED=$(SOAK_SEED) PYTEST_ADDOPTS=-s \
		molecule test -s release-safety

lab-down: venv
	opspack lab down

clean:
	rm -rf $(VENV) .cache .pytest_cache src/*.egg-info
