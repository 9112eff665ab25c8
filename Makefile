# kubeboot — see README.md. Every target runs on a fresh Debian 12 machine
# after scripts/setup-host.sh (which .ci/run also calls).
GO      ?= go
BIN     := bin
OUT     := out
SPEC    ?= configs/image.yaml
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"

.PHONY: all build test bench fuzz image artifacts e2e clean

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

# Part 1: check the image with sfdisk/fsck.vfat/unsquashfs/qemu-img, then
# boot raw and qcow2 under QEMU+OVMF (scripts/e2e-boot.sh).
# A per-node image (config baked in) is built and booted too.
e2e: image
	KUBEBOOT_TEST_IMAGE=$(CURDIR)/$(OUT)/node.raw $(GO) test -count=1 -run TestBuiltImage -v ./image/build
	scripts/e2e-boot.sh $(OUT)/node.raw
	KUBEBOOT_E2E_LOGS=$(OUT)/e2e-boot-qcow2 scripts/e2e-boot.sh $(OUT)/node.qcow2
	$(BIN)/kubeboot image build --spec $(SPEC) -o $(OUT)/e2e-node.raw --machine-config scripts/e2e/node.yaml
	KUBEBOOT_TEST_IMAGE=$(CURDIR)/$(OUT)/e2e-node.raw KUBEBOOT_TEST_MACHINE_CONFIG=$(CURDIR)/scripts/e2e/node.yaml \
	  $(GO) test -count=1 -run TestBuiltImage -v ./image/build
	KUBEBOOT_E2E_SEED=none KUBEBOOT_E2E_LOGS=$(OUT)/e2e-boot-baked scripts/e2e-boot.sh $(OUT)/e2e-node.raw

clean:
	rm -rf $(BIN) $(OUT)
