# relay's build, test and benchmark entry points. CI runs `make test` (see .ci/run).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build cross test test-unit test-integration bench lint clean

all: build

## build: the static relay binary in bin/relay
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/relay ./cmd/relay

## cross: relay for linux/amd64 and linux/arm64 in bin/relay-linux-ARCH
cross:
	for a in amd64 arm64; do CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/relay-linux-$$a ./cmd/relay || exit 1; done

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
## it needs a private network namespace), and relay runner's start-to-exec; rewrites
## docs/benchmarks.md. scripts/bench-tools.sh installs the peers and the stack first (as
## root; skipped when present).
bench: build
	scripts/bench-tools.sh
	scripts/bench.sh bin/relay docs/benchmarks.md
	scripts/bench-copy.sh bin/relay docs/benchmarks.md 3
	scripts/bench-build.sh bin/relay docs/benchmarks.md 3
	scripts/bench-sign.sh docs/benchmarks.md 3
	scripts/bench-runner.sh docs/benchmarks.md 20

## lint: formatting (vendored third-party code excepted) and vet, for both build tiers
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null | grep -v '/vendor/')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

clean:
	rm -rf bin dist .relay examples/hello/.relay examples/hello/dist
