# c360 — developer entry points. `make help` lists the targets.
#
# Databases: unless DATABASE_URL / TEST_DATABASE_URL / BENCH_DATABASE_URL are
# set, a project-local PostgreSQL cluster is started by scripts/pg.sh (data in
# .data/pg, port ${C360_PG_PORT:-54329}; databases c360 for `make run`,
# c360_test for the tests, c360_bench for the bench tool); `make stop` stops it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO         ?= go
BIN        := bin/c360
PG         := scripts/pg.sh
# Directories written by `make generate` (see gqlgen.yml).
GEN_DIRS   := graph resolver
FUZZTIME   ?= 30s
GO_BUILD   = $(GO) build -o $(BIN) ./cmd/c360
GQLGEN     = $(GO) run github.com/99designs/gqlgen
# gqlgen, then lists marshalled by graph/slice.go's marshalSlice, and resolver
# fields scheduled by graph/inline.go's resolveField, with a @defer group made
# only for objects that defer a field (deferredGroup; see there), and objects
# written by graph/object.go's marshalObject, and @hasRole's roles read once
# (graph/roles.go's directiveRoles), and plain scalar fields marshalled
# without gqlgen's per-field middleware (graph/leaf.go's resolveLeaf).
GENERATE   = $(GQLGEN) generate && sed -i -e 's/graphql\.MarshalSliceConcurrently(/marshalSlice(/' \
  -e 's/out\.ResolveConcurrently(ec\.OperationContext, &deferred, i,/ec.resolveField(ctx, out, \&deferred, field, obj, i,/' \
  -e 's/deferred := graphql\.NewDeferredGroup(ctx)/deferred := deferredGroup(ctx, fields)/' \
  -e 's/^\treturn out$$/\treturn marshalObject(fields, out)/' \
  -e 's/roles, err := ec\.unmarshalNRole2ᚕgithubᚗcomᚋc360devᚋc360ᚐRoleᚄ(ctx, \[\]any{/roles, err := ec.directiveRoles(ctx, []any{/' \
  -e 's/return graphql\.ResolveField(/return resolveLeaf(ec.Resolvers,/' graph/*.generated.go
BENCH_FLAGS ?=
# make bench reuses the newest complete seed of its shape (bench/cmd/bench
# --reuse): the first run seeds 1M customers, 10M events and 2M messages by
# COPY, 151 s on the project's 2-core machine, later runs none.
# BENCH_REUSE= seeds afresh.
BENCH_REUSE ?= --reuse
# bench-go: e.g. BENCH_GO_FLAGS='-bench=Ingest -count=6' > new.txt, then benchstat old.txt new.txt.
BENCH_GO_FLAGS ?= -bench=.

# Shell snippet: fail listing the Go files gofmt would change (gqlgen's output,
# which make generate's rewrites leave unformatted, excluded).
define gofmt_check
unformatted="$$(find . -name '*.go' -not -name '*.generated.go' -not -path './graph/model/*' -not -path './.data/*' -not -path './e2e/node_modules/*' -not -path './vendor/*' -print0 | xargs -0 -r gofmt -l)"; \
if [ -n "$$unformatted" ]; then \
  echo "these files need gofmt -w:" >&2; \
  printf '  %s\n' $$unformatted >&2; \
  exit 1; \
fi;
endef

# Shell snippet: use TEST_DATABASE_URL if set, else the local cluster's c360_test.
define test_db
if [ -z "$${TEST_DATABASE_URL:-}" ]; then \
  $(PG) ensure; \
  TEST_DATABASE_URL="$$($(PG) url c360_test)"; \
fi; \
export TEST_DATABASE_URL;
endef

# Shell snippet for check-generate: fails when `make generate` changes anything
# under $(GEN_DIRS), i.e. generated code must be committed up to date. Content is
# compared before and after, so uncommitted local edits alone do not trip it; in a
# clean CI clone (CI set) any difference from the commit fails too.
define check_generate
snap() { find $(GEN_DIRS) -type f 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum; }; \
before="$$(snap)"; \
printf '%s\n' '$(GQLGEN) generate'; \
$(GENERATE); \
after="$$(snap)"; \
if [ "$$before" != "$$after" ]; then \
  echo "" >&2; \
  echo "check-generate: 'make generate' changed generated code in $(GEN_DIRS):" >&2; \
  diff <(printf '%s\n' "$$before") <(printf '%s\n' "$$after") | grep '^[<>]' | awk '{print "  " $$1 " " $$3}' | sort -u -k2 >&2 || true; \
  git status --porcelain -- $(GEN_DIRS) >&2 || true; \
  echo "check-generate: run 'make generate' and commit the result." >&2; \
  exit 1; \
fi; \
if [ -n "$${CI:-}" ] && [ -n "$$(git status --porcelain -- $(GEN_DIRS) 2>/dev/null)" ]; then \
  echo "check-generate: generated code differs from the commit:" >&2; \
  git status --porcelain -- $(GEN_DIRS) >&2; \
  git --no-pager diff --stat -- $(GEN_DIRS) >&2; \
  echo "check-generate: run 'make generate' and commit the result." >&2; \
  exit 1; \
fi; \
echo "check-generate: generated code is up to date";
endef

.PHONY: help build generate check-generate run test test-faults test-race stop bench bench-go fuzz clean lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

build: ## build bin/c360
	$(GO_BUILD)

generate: ## regenerate GraphQL code (gqlgen) from schema/*.graphqls
	$(GENERATE)

check-generate: ## fail if `make generate` would change generated code
	@$(check_generate)

run: build ## start the API on :8080 with a demo workspace (local PostgreSQL unless DATABASE_URL is set)
	@if [ -z "$${DATABASE_URL:-}" ]; then \
	  $(PG) ensure; \
	  DATABASE_URL="$$($(PG) url c360)"; \
	fi; \
	export DATABASE_URL; \
	$(BIN) migrate up; \
	scripts/demo.sh ensure $(BIN); \
	scripts/demo.sh print; \
	exec $(BIN) serve --dev

test: ## check-generate, gofmt, vet, unit+integration tests, then e2e (if e2e/ exists)
	@$(test_db) \
	$(check_generate) \
	echo "gofmt -l"; \
	$(gofmt_check) \
	echo "go vet ./..."; \
	$(GO) vet ./...; \
	echo "go test ./... except faults/ (TEST_DATABASE_URL=$$TEST_DATABASE_URL)"; \
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/faults$$'); \
	if [ -f e2e/package.json ]; then \
	  echo "$(GO_BUILD)"; \
	  $(GO_BUILD); \
	  scripts/node.sh ensure; \
	  echo "e2e: npm ci && npm test"; \
	  cd e2e; \
	  npm ci --no-audit --no-fund; \
	  npm test; \
	else \
	  echo "e2e: no e2e/package.json, skipping"; \
	fi

test-faults: ## fault-injection tests (faults/): crash, database restart, shutdown, overload, poison; own PostgreSQL
	@if ! { command -v pg_config >/dev/null 2>&1 && [ -x "$$(pg_config --bindir)/initdb" ]; } && \
	   ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "test-faults: no PostgreSQL server binaries; installing them with $(PG) ensure"; \
	  $(PG) ensure; \
	fi; \
	echo "go test -v ./faults/ (each test starts its own PostgreSQL cluster and c360 processes)"; \
	$(GO) test -count=1 -timeout 5m -v ./faults/

test-race: ## go test -race (slow on small machines)
	@$(test_db) \
	$(GO) test -race -count=1 -timeout 30m ./...

stop: ## stop the local PostgreSQL cluster
	@$(PG) stop

# The bench tool seeds and loads a database of its own, BENCH_DATABASE_URL or
# the local cluster's c360_bench (never the tests' or make run's), and
# migrates it at start. Its query runs at 1M customers; the first run seeds
# them (BENCH_REUSE above). BENCH_FLAGS='query --workers 1,4' runs one part.
bench: build ## Go benchmarks, then the bench tool (bench/cmd/bench) on BENCH_DATABASE_URL (default: local c360_bench); the first run seeds 1M customers (minutes)
	@$(test_db) \
	$(GO) test -run='^$$' -bench=. -benchmem -timeout 30m ./...; \
	if [ -d bench/cmd/bench ]; then \
	  if [ -z "$${BENCH_DATABASE_URL:-}" ]; then \
	    $(PG) ensure; \
	    BENCH_DATABASE_URL="$$($(PG) url c360_bench)"; \
	  fi; \
	  export DATABASE_URL="$$BENCH_DATABASE_URL"; \
	  $(GO) run ./bench/cmd/bench $(BENCH_FLAGS) $(BENCH_REUSE); \
	fi

bench-go: ## Go benchmarks only (testing.B, -benchmem), in benchstat's input format
	@$(test_db) \
	$(GO) test -run='^$$' -benchmem -timeout 30m $(BENCH_GO_FLAGS) ./...

fuzz: ## run every Fuzz* target for FUZZTIME each (default 30s)
	@$(test_db) \
	targets="$$($(GO) test -list '^Fuzz' $$($(GO) list ./... | grep -v '/faults$$') | awk '/^Fuzz/ { names = names " " $$1; next } /^ok/ { n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2, a[i]; names = "" }')"; \
	if [ -z "$$targets" ]; then echo "fuzz: no Fuzz* targets found"; exit 0; fi; \
	while read -r pkg fn; do \
	  echo "fuzz: $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
	done <<< "$$targets"

lint: ## gofmt (gqlgen's output excluded) and go vet
	@$(gofmt_check) \
	$(GO) vet ./...

clean: ## remove build output
	rm -rf bin/
