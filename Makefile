# Developer shortcuts. CI runs .ci/run; nothing here is needed to build or test.

FUZZTIME ?= 1m
CHAOS ?= 5m
STRESS ?= 2m
DURATION ?= 10m
SEED ?= $(shell date +%s)
# The revision bench-base measures against: origin/main when there is one,
# else the commit before HEAD. BASE=HEAD measures uncommitted changes.
# Extra flags of bench-cluster, such as CLUSTER_FLAGS='-idle 10m'.
CLUSTER_FLAGS ?=
BASE ?= $(shell git rev-parse -q --verify origin/main >/dev/null && echo origin/main || echo HEAD~1)

.PHONY: test test-python test-js ci fuzz chaos stress flood faults mutations bench-base bench-cluster

# The README's test command, with the race detector as CI runs it.
test:
	go test -race ./...

# The Python client's tests against a daemon built from this tree.
test-python:
	clients/python/test.sh

ci:
	.ci/run

# The JavaScript client's tests (npm ci, tsc, node --test against a freshly built mutexd).
test-js:
	clients/js/test.sh

# Runs every fuzz target in the module for FUZZTIME each (default 1m). New
# failures land in the package's testdata/fuzz/<Target>/ and then run as
# seeds in every go test.
fuzz:
	@set -e; for pkg in $$(go list ./...); do \
	  for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    go test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# The chaos test for CHAOS (default 5m) instead of CI's 20s, with a fresh
# SEED (printed; pass SEED=n to narrow a failure down).
chaos:
	@echo "chaos seed $(SEED)"
	go test -race -count=1 -timeout 0 -run '^TestChaos$$' ./internal/server -chaos.duration=$(CHAOS) -chaos.seed=$(SEED) -v

# The engine's stress test for STRESS (default 2m) instead of CI's 2s, and
# its random-operations test over 2,000 seeds, with a fresh SEED.
stress:
	@echo "stress seed $(SEED)"
	go test -race -count=1 -timeout 0 -run '^TestStress' ./internal/engine -stress.duration=$(STRESS) -stress.seed=$(SEED) -v
	go test -race -count=1 -timeout 0 -run '^TestRandomOpsOnOneShard$$' ./internal/engine -random.seeds=2000 -random.base=$(SEED)

# The fault-injection suite (internal/faults) for DURATION (default 10m)
# instead of CI's short run, with a fresh SEED (printed; SEED=n replays
# the run's choices of faults and operations).
faults:
	@echo "faults seed $(SEED)"
	FAULTS_SEED=$(SEED) FAULTS_DURATION=$(DURATION) go test -race -count=1 -timeout 0 -run '^TestFaults$$' ./internal/faults -v

# The full 20,000-waiter flood (scaled down under -race).
flood:
	go test -count=1 -run '^(TestFloodOfWaiters|TestStreamingWaitersFlood)$$' ./internal/server -v

# The working tree's mutexd against mutexd built at BASE, interleaved in one
# run (uncontended and contended, about four minutes), as the rule "a
# change may not make the standalone acquire/release path slower" asks.
# Writes bench/bench-base.md (ignored by git); BENCHMARKS.md is untouched.
bench-base:
	cd bench && go run ./cmd/compare -systems mutexd,base -base $(BASE) -reps 5 -duration 3s -waiters 0 -out bench-base.md
	@cat bench/bench-base.md

# Three mutexd servers in cluster mode against a three-member etcd cluster
# (Debian's etcd-server, installed if missing), both durable, on loopback:
# throughput at C=64, one hot key at C=16 (FIFO, fairness), kill -9 and
# SIGTERM of the leader under load, elections while idle (10s by default;
# CLUSTER_FLAGS='-idle 10m' for the target's ten minutes). About five
# minutes. Rewrites only the section "Cluster: mutexd 3 servers vs etcd 3
# members" of BENCHMARKS.md.
bench-cluster:
	bench/run.sh -systems cluster $(CLUSTER_FLAGS)

# The mutation proof of the fault suite's checkers: mutexd built with each
# deliberate bug of internal/cluster (mutation.go) under the cluster
# workload, SEED fixed (default 1) so that a run replays; fails if a
# broken build passes every checker.
MSEED ?= 1
MDURATION ?= 45s
mutations:
	MUTATIONS=1 FAULTS_SEED=$(MSEED) FAULTS_DURATION=$(MDURATION) go test -count=1 -timeout 0 -run '^TestMutationsBite$$' ./internal/faults -v
