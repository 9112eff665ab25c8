# kubeboot — see README.md. Every target runs on a fresh Debian 12 machine
# after scripts/setup-host.sh (which .ci/run also calls).
GO      ?= go
BIN     := bin
OUT     := out
SPEC    ?= configs/image.yaml
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"

.PHONY: all build test bench bench-boot fuzz faults image artifacts e2e clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/kubeboot ./cmd/kubeboot
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/bootstrapd ./cmd/bootstrapd

# Unit and integration tests. Tests that need root, network namespaces or
# systemd-nspawn skip with a reason when those are missing; CI runs as root.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Builder faults (cmd/kubeboot/faults_test.go; root, the artifact and image
# step caches of $(SPEC) filled by make image): Ctrl-C as each step of
# kubeboot image build starts, an output directory and a cache on a small
# tmpfs, an artifact whose sha256 no longer matches the lock. Builds see the
# real cache through an overlay mount and never write to it. The hostile
# configs and inputs run in make test (cmd/bootstrapd, TestHostileInputsStayBounded).
# Then power cuts under QEMU (e2e/powercut_test.go): the lab's controller
# scenario, then a second controller whose first boot loses its power at 7
# points. Report: out/faults/report.json.
faults: image
	KUBEBOOT_FAULTS=1 $(GO) test -count=1 -timeout 60m -run '^TestBuild(InterruptedAtEachStep|OutputFillsUp|CacheFillsUp|RefusesAnArtifactThatChanged)$$' -v ./cmd/kubeboot
	KUBEBOOT_E2E=1 KUBEBOOT_E2E_SCENARIOS=controller,powercut KUBEBOOT_E2E_OUT=$(CURDIR)/$(OUT)/faults \
	  $(if $(wildcard $(dir $(QEMU_LOCK))),flock $(QEMU_LOCK)) $(GO) test -count=1 -run TestLab -v -timeout 3h ./e2e

# Every fuzz target, FUZZTIME each (make test runs their seed corpora).
# Go's minimizer is quadratic in the input's size and by default may take
# 60 s per new input, reporting no executions meanwhile: that is where
# 120 s of fuzzing once showed 40 executions. 100 runs per minimization
# leave the time for fuzzing (docs/benchmarks.md).
FUZZTIME ?= 60s
FUZZMINIMIZETIME ?= 100x
FUZZ_TARGETS := machineconfig:FuzzParse machineconfig:FuzzParseNetplan \
	bootstrapd/source:FuzzNetworkConfig bootstrapd/source/volume:FuzzReadFile \
	bootstrapd/network:FuzzLeaseToResolvConf
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== $${t##*:} (./$${t%%:*})"; \
	  $(GO) test -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./$${t%%:*}; \
	done

# Builds every pinned artifact of $(SPEC) from source (Go module proxy and
# Debian mirror only), writes its lock and lists the cache. Warm: seconds.
artifacts:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/kubeboot ./cmd/kubeboot
	$(BIN)/kubeboot artifacts build --from-source --spec $(SPEC)
	$(BIN)/kubeboot artifacts list --spec $(SPEC)

# out/node.raw + out/node.qcow2 from $(SPEC) (docs/image.md).
image: build artifacts
	$(BIN)/kubeboot image build --spec $(SPEC) -o $(OUT)/node.raw

# The image checks (sfdisk, fsck.vfat, unsquashfs, qemu-img) of node.raw and
# of an image with a machine config baked in, then the QEMU lab (docs/e2e.md):
# a cluster from configs/*.yaml, reflashes, a reboot, bond+VLAN networks.
# On machines shared through $(QEMU_LOCK) (one QEMU job at a time) the lab
# takes the lock; where its directory does not exist (CI) it runs directly.
QEMU_LOCK   ?= /work/locks/qemu
E2E_TIMEOUT ?= 5h
E2E_CONFIG  := e2e/testdata/bond-vlan.yaml
e2e: image
	KUBEBOOT_TEST_IMAGE=$(CURDIR)/$(OUT)/node.raw $(GO) test -count=1 -run TestBuiltImage -v ./image/build
	$(BIN)/kubeboot image build --spec $(SPEC) -o $(OUT)/e2e-node.raw --machine-config $(E2E_CONFIG)
	KUBEBOOT_TEST_IMAGE=$(CURDIR)/$(OUT)/e2e-node.raw KUBEBOOT_TEST_MACHINE_CONFIG=$(CURDIR)/$(E2E_CONFIG) \
	  $(GO) test -count=1 -run TestBuiltImage -v ./image/build
	KUBEBOOT_E2E=1 KUBEBOOT_E2E_BAKED_IMAGE=$(CURDIR)/$(OUT)/e2e-node.raw \
	  $(if $(wildcard $(dir $(QEMU_LOCK))),flock $(QEMU_LOCK)) $(GO) test -count=1 -run TestLab -v -timeout $(E2E_TIMEOUT) ./e2e

# First boot to Ready under QEMU against its floor (docs/benchmarks.md): the
# lab's controller scenario, then the same image with bootstrapd masked and
# the reference's steps run by a script. Report: out/bench-boot/report.json.
bench-boot: image
	KUBEBOOT_E2E=1 KUBEBOOT_E2E_SCENARIOS=controller,floor KUBEBOOT_E2E_OUT=$(CURDIR)/$(OUT)/bench-boot \
	  $(if $(wildcard $(dir $(QEMU_LOCK))),flock $(QEMU_LOCK)) $(GO) test -count=1 -run TestLab -v -timeout 2h ./e2e

clean:
	rm -rf $(BIN) $(OUT)
