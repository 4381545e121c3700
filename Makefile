# seghub — every tool is pinned here and installed into ./bin by `go install`,
# so a fresh machine needs only Go.
SHELL := /bin/bash
export GOBIN := $(CURDIR)/bin
export PATH := $(GOBIN):$(PATH)

BUF_VERSION              := v1.75.0
PROTOC_GEN_GO_VERSION    := v1.36.12
PROTOC_GEN_GO_GRPC_VER   := v1.6.2
GRPC_GATEWAY_VERSION     := v2.33.0
GHZ_VERSION              := v0.93.0

PKGS      := github.com/seghub/seghub/...
GO_DIRS   := gen pkg services cmd bench web/embed.go
TEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: all tools generate lint check-generate test test-go run build bench e2e fuzz clean web web-types check-web chromium promtool check-alerts

all: build

# Tools are stamped by version so a bump reinstalls and an unchanged one is free.
bin/.buf-$(BUF_VERSION):
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@
bin/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@
bin/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VER):
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VER)
	@touch $@
bin/.grpc-gateway-$(GRPC_GATEWAY_VERSION):
	go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION) github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	@touch $@

tools: bin/.buf-$(BUF_VERSION) bin/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) bin/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VER) bin/.grpc-gateway-$(GRPC_GATEWAY_VERSION)

generate: tools
	buf format -w
	rm -rf gen/seghub gen/openapi/*.json
	buf generate

# buf breaking compares the contracts with the last release point: the commit
# named in proto/BREAKING_BASELINE (committed, so every clone has it), or
# $(BREAKING_BASELINE) when given. Moving it after a release accepts that
# release's contract (docs/DEVELOPING.md).
BREAKING_BASELINE ?= $(shell cat proto/BREAKING_BASELINE)

lint: tools
	buf lint
	buf format -d --exit-code
	@if git rev-parse -q --verify "$(BREAKING_BASELINE)^{commit}" >/dev/null; then \
		echo "buf breaking --against $(BREAKING_BASELINE)"; \
		buf breaking --against ".git#ref=$$(git rev-parse "$(BREAKING_BASELINE)^{commit}")" --path proto/seghub; \
	else echo "buf breaking: the release point $(BREAKING_BASELINE) is not in this clone (git fetch --unshallow), failing"; exit 1; fi
	go vet $(PKGS)
	@out=$$(gofmt -l $(GO_DIRS)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Regenerate and fail when the committed gen/ differs: stale contracts never land.
check-generate: generate
	@st=$$(git status --porcelain -- gen proto); if [ -n "$$st" ]; then \
		echo "gen/ is stale or proto/ is unformatted; run 'make generate' and commit:"; echo "$$st"; exit 1; fi

# The console's browser suite (cmd/seghub TestConsoleInChromium) drives
# Debian's chromium; under CI=true a missing browser fails it.
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test-go: chromium
	go test $(TEST_FLAGS) $(PKGS)

# The alert rules are checked and unit-tested by Debian's promtool (package
# prometheus); cmd/seghub TestOperationsMetricsScenario checks that every
# metric they and the Grafana dashboard name is exported.
promtool:
	@command -v promtool >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus)

check-alerts: promtool
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

test: lint check-generate check-web check-alerts test-go

# The web console (web/): locked dependencies, types generated from the
# contracts, type check, unit tests, and the build that the binary embeds.
# node_modules is reinstalled only when the lock is newer than it.
web/node_modules/.installed: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

web-types: web/node_modules/.installed
	cd web && node scripts/gen-types.mjs ../gen/openapi/seghub.swagger.json ../proto src/api/schema.gen.ts

web: web-types
	cd web && npx tsc --noEmit
	cd web && npx vitest run
	cd web && npx vite build

# Rebuild and fail when the committed console or its generated types differ:
# `make run` serves what is committed, so it must be what the sources build.
check-web: web
	@st=$$(git status --porcelain -- web/dist web/src/api/schema.gen.ts); if [ -n "$$st" ]; then \
		echo "web/dist or web/src/api/schema.gen.ts is stale; run 'make web' and commit:"; echo "$$st"; exit 1; fi

build:
	go build -o bin/seghub ./cmd/seghub

# The all-in-one on the embedded default (SQLite + embedded JetStream), seeded
# on first start with demo users, segments, a product tour, and an Appcues
# connection to the in-process destination simulator (:8090) with a recurring sync.
run: build
	SEGHUB_SEED=$${SEGHUB_SEED:-true} SEGHUB_DESTSIM_ADDR=$${SEGHUB_DESTSIM_ADDR:-127.0.0.1:8090} ./bin/seghub serve

# Split mode end to end: every service its own process on PostgreSQL and the
# external NATS (also part of `make test`).
e2e:
	go test -count=1 -run 'TestSplit|TestE2E' -v ./cmd/seghub

# Fuzz each target for FUZZTIME (not part of make test; seed corpora under
# testdata/fuzz run in every make test as ordinary tests).
FUZZTIME ?= 30s
fuzz:
	go test -run x -fuzz FuzzParseWebhook -fuzztime $(FUZZTIME) ./services/segmentsync/internal/server
	go test -run x -fuzz FuzzVerifySignature -fuzztime $(FUZZTIME) ./services/segmentsync/internal/server
	go test -run x -fuzz FuzzCompile -fuzztime $(FUZZTIME) ./services/targeting/internal/audience
	go test -run x -fuzz FuzzParseWebhook -fuzztime $(FUZZTIME) ./services/eventrelay/internal/schema
	go test -run x -fuzz FuzzRESTIngest -fuzztime $(FUZZTIME) ./services/gateway

bench:
	@echo "see bench/RESULTS.md for each benchmark's command"

clean:
	rm -rf bin data
