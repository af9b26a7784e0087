# relay's build, test and benchmark entry points. CI runs `make test` (see .ci/run).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build cross dist action-pin test test-unit test-integration bench lint clean

# The platforms of relay's release binaries (action/install.sh downloads them by these names).
DIST_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

all: build

## build: the static relay binary in bin/relay
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/relay ./cmd/relay

## cross: relay for linux/amd64 and linux/arm64 in bin/relay-linux-ARCH
cross:
	for a in amd64 arm64; do CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/relay-linux-$$a ./cmd/relay || exit 1; done

## dist: the release binaries in bin/dist/relay-OS-ARCH[.exe] and their bin/dist/SHA256SUMS.
## Reproducible: the same source and VERSION give the same bytes anywhere (no VCS stamp, no
## build id, trimmed paths), which is how the action's pinned sums are checked at release.
dist:
	rm -rf bin/dist && mkdir -p bin/dist
	for p in $(DIST_PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags "$(LDFLAGS) -buildid=" \
	    -o bin/dist/relay-$$os-$$arch$$ext ./cmd/relay || exit 1; done
	cd bin/dist && sha256sum relay-* > SHA256SUMS

## action-pin: before tagging VERSION (e.g. make action-pin VERSION=v1.2.3): build dist and pin
## its sums in the action (action/VERSION, action/sha256sums/VERSION); commit, then tag
action-pin: dist
	@case "$(VERSION)" in v[0-9]*.[0-9]*.[0-9]*) ;; *) echo "VERSION=$(VERSION) is not vX.Y.Z"; exit 1 ;; esac
	cp bin/dist/SHA256SUMS action/sha256sums/$(VERSION)
	echo $(VERSION) > action/VERSION

## test: everything CI runs: unit tests and the integration tier, race detector on
test: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags integration -timeout 30m ./...

## test-unit: the fast tier; needs nothing but Go (plain `go test ./...` runs the same tests)
test-unit:
	CGO_ENABLED=1 $(GO) test -race -short ./...

## test-integration: only the end-to-end and real-component tests
test-integration:
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags integration -timeout 30m -run 'E2E|Integration' ./...

## bench: relay run --local on the example, relay copy against crane, regctl and skopeo,
## then sign/SBOM/provenance/verify against syft + cosign on the local Sigstore stack (root:
## it needs a private network namespace), relay runner's start-to-exec and relay listener's
## message-to-start, burst and idle cost; rewrites docs/benchmarks.md.
## scripts/bench-tools.sh installs the peers and the stack first (as root; skipped when present).
bench: build
	scripts/bench-tools.sh
	scripts/bench.sh bin/relay docs/benchmarks.md
	scripts/bench-copy.sh bin/relay docs/benchmarks.md 3
	scripts/bench-build.sh bin/relay docs/benchmarks.md 3
	scripts/bench-sign.sh docs/benchmarks.md 3
	scripts/bench-runner.sh docs/benchmarks.md 20
	scripts/bench-listener.sh bin/relay docs/benchmarks.md 3 30
	scripts/bench-cold.sh docs/benchmarks.md

## lint: formatting (vendored third-party code excepted) and vet, for both build tiers
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null | grep -v '/vendor/')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

clean:
	rm -rf bin dist .relay examples/hello/.relay examples/hello/dist
