# Berth. `make run` starts the controller on its embedded default;
# `make test` runs everything CI runs. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
BIN := $(CURDIR)/.bin
MODULES := gen db controller agent
VERSION ?= dev
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/berthhq/berth/controller/internal/buildinfo.Version=$(VERSION) \
	-X github.com/berthhq/berth/controller/internal/buildinfo.commit=$(COMMIT) \
	-X github.com/berthhq/berth/agent/internal/version.Version=$(VERSION)
DATA_DIR ?= $(CURDIR)/.berth


.PHONY: sqlc all build run test test-go check-generated generate tools lint fmt vet bench deps-test clean

all: build

## tools: build the pinned generators (tools/go.mod) into .bin/
TOOLS := github.com/bufbuild/buf/cmd/buf github.com/sqlc-dev/sqlc/cmd/sqlc \
	google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
tools: $(BIN)/.tools-stamp

$(BIN)/.tools-stamp: tools/go.mod tools/go.sum
	cd tools && GOWORK=off $(GO) build -o $(BIN)/ $(TOOLS)
	touch $@

## generate: regenerate everything under gen/ (protobuf, gRPC, sqlc)
generate: tools
	rm -rf gen/proto gen/dbsqlc
	$(BIN)/buf lint
	PATH=$(BIN):$$PATH $(BIN)/buf generate
	cd db && $(BIN)/sqlc generate
	cd gen && $(GO) mod tidy

## sqlc: regenerate only the sqlc queries (quick loop while writing queries)
sqlc: tools
	cd db && $(BIN)/sqlc generate

## check-generated: fail when regenerating changes anything
check-generated: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "generated code is stale: run 'make generate' and commit gen/"; \
		git status --porcelain -- gen; exit 1; fi

## build: the controller and agent binaries into .bin/
# grpcnotrace leaves golang.org/x/net/trace out: nothing here uses gRPC's
# request tracing, and its package registers /debug handlers on
# http.DefaultServeMux and costs every CLI start its init.
BUILDTAGS := grpcnotrace
build:
	CGO_ENABLED=0 $(GO) build -tags $(BUILDTAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth ./controller/cmd/berth
	CGO_ENABLED=0 $(GO) build -tags $(BUILDTAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-agent ./agent/cmd/berth-agent
	mkdir -p $(BIN)/agent-dist
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags $(BUILDTAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/agent-dist/berth-agent-linux-$$arch ./agent/cmd/berth-agent; \
	done
	cp agent/packaging/install.sh agent/packaging/berth-agent.service $(BIN)/agent-dist/

## run: the controller on its embedded PostgreSQL in ./.berth
run: build deps-run
	BIN=$(BIN) DATA_DIR=$(DATA_DIR) ./scripts/run.sh

## deps-test / deps-run: install what tests and `make run` need when missing
deps-run deps-test:
	@./scripts/ensure-deps.sh $@

## test: everything CI runs
test: deps-test check-generated vet fmt-check test-go

test-go:
	$(GO) test -race -count=1 -timeout 30m $(addprefix ./,$(addsuffix /...,$(MODULES)))

vet:
	$(GO) vet $(addprefix ./,$(addsuffix /...,$(MODULES)))

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $(MODULES)

lint: vet fmt-check
	$(BIN)/buf lint

## bench: benchmarks, with the fleet simulator (not shipped) and redeploys under wrk load; figures go to BENCHMARKS.md
bench: deps-test build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth-fleetsim ./agent/cmd/berth-fleetsim
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth-rawcopy ./controller/cmd/berth-rawcopy
	@command -v prometheus-node-exporter >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null; } || true
	./scripts/bench.sh
	BIN=$(BIN) ./scripts/deploy-bench.sh | tee -a BENCHMARKS.md
	BIN=$(BIN) ./scripts/redeploy-bench.sh | tee -a BENCHMARKS.md
	BIN=$(BIN) ./scripts/alert-bench.sh | tee -a BENCHMARKS.md
	./scripts/notify-bench.sh | tee -a BENCHMARKS.md
	CGO_ENABLED=0 $(GO) build -tags $(BUILDTAGS) -trimpath -ldflags '-s -w' -o $(BIN)/berth-backup-bench ./agent/internal/backup/benchrun
	BIN=$(BIN) ./scripts/backup-bench.sh | tee -a BENCHMARKS.md
	BERTH_BENCH_OUT=$(CURDIR)/BENCHMARKS.md $(GO) test -count=1 -parallel 1 -run '^(TestDomainsACME|TestDomainsManyOnOneServer)$$' ./controller/cmd/berth/

clean:
	rm -rf $(BIN) gen/proto gen/dbsqlc
