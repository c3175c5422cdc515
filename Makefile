# limpet: two commands do everything on a fresh machine.
#   make run    build, start three demo backends and limpet with ./config.yaml
#   make test   every test the project has
# make bench runs the benchmarks, make fuzz the fuzz targets (neither is part of make test).

CARGO ?= cargo

.PHONY: all build run test lint bench bench-micro fuzz clean

all: build

build:
	$(CARGO) build --release --workspace --bins

# scripts/setup.sh installs what a fresh Debian/Ubuntu machine lacks (as root), or
# prints the one command that does.
run:
	scripts/setup.sh run
	$(MAKE) build
	scripts/run-demo.sh

test:
	scripts/setup.sh test
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	LIMPET_LOG=warn ./target/debug/limpet --check --config config.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The guard runs last: it fails `make bench` while limpet's CPU per request is above
# 1.5x HAProxy's (issue 21), after every figure has been printed.
bench: build
	scripts/bench.sh | tee target/bench-anchors.txt
	SECS=$${SECS:-5} scripts/bench-tls.sh
	SECS=$${SECS:-5} scripts/bench-threads.sh
	SECS=$${SECS:-5} target/release/reload-bench
	SECS=$${SECS:-5} target/release/store-bench
	N=$${N:-3000} scripts/bench-idle.sh
	scripts/bench-guard.sh target/bench-anchors.txt

bench-micro:
	$(CARGO) bench -p limpet-affinity -p limpet-balance --benches
	$(CARGO) bench -p limpet-sessions --bench memory

# Coverage-guided fuzzing (afl.rs), FUZZ_SECS per target (default 60); exits non-zero
# on any crash or hang. `make fuzz FUZZ_TARGETS=config` runs one target.
fuzz:
	FUZZ_SECS=$${FUZZ_SECS:-60} scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	$(CARGO) clean
