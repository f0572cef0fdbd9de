# The README's two commands are `make demo` and `make test`; both install what
# is missing first.
.PHONY: deps docker-engine containerd2 signing-tools build demo test bench lint clean

deps:
	@scripts/install-deps.sh

# A private Docker Engine 28 + containerd 1.7 from Debian's packages, unpacked
# into .cache/docker-engine (nothing is installed into the system).
docker-engine:
	@scripts/docker-engine.sh >/dev/null

# A private containerd 2.x (Debian unstable's) in .cache/containerd-2, the
# same way: the shim, CRI and Docker suites run on it too (README: "Which
# containerd each suite runs on").
containerd2:
	@scripts/containerd2.sh >/dev/null

# cosign, notation and oras (Debian unstable's, unpacked into
# .cache/signing-tools) for the signing interop tests.
signing-tools:
	@scripts/signing-tools.sh >/dev/null

build: deps
	cargo build --workspace --bins

demo: deps
	scripts/demo.sh

test: deps docker-engine containerd2 signing-tools
	cargo build --workspace --bins
	@echo "Testing against: $$(containerd --version) (shim and CRI tests);" \
	  "$$(.cache/docker-engine/bin/dockerd --version) with $$(.cache/docker-engine/bin/containerd --version) (Docker tests)"
	cargo test --workspace
	@echo "Again on $$(.cache/containerd-2/bin/containerd --version): the shim, CRI, Docker and signing suites"
	WASMBOX_TEST_CONTAINERD=$(CURDIR)/.cache/containerd-2/bin cargo test --workspace --test shim --test cri --test docker --test signing

# Issue 11's measurements in one run (bench/results/latest.{tsv,md,png});
# output_race.sh, startup.sh and idle.sh also run alone.
bench:
	@scripts/install-deps.sh --bench
	benches/suite.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf .demo .bench .bench-pack-push .bench-startup .bench-output-race .bench-idle .bench-verify
