# The README's two commands are `make demo` and `make test`; both install what
# is missing first.
.PHONY: deps docker-engine build demo test bench lint clean

deps:
	@scripts/install-deps.sh

# A private Docker Engine 28 + containerd 1.7 from Debian's packages, unpacked
# into .cache/docker-engine (nothing is installed into the system).
docker-engine:
	@scripts/docker-engine.sh >/dev/null

build: deps
	cargo build --workspace --bins

demo: deps
	scripts/demo.sh

test: deps docker-engine
	cargo build --workspace --bins
	@echo "Testing against: $$(containerd --version) (shim and CRI tests);" \
	  "$$(.cache/docker-engine/bin/dockerd --version) with $$(.cache/docker-engine/bin/containerd --version) (Docker tests)"
	cargo test --workspace

bench: deps
	benches/pack_push.sh
	benches/startup.sh
	benches/output_race.sh
	benches/idle.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf .demo .bench .bench-startup .bench-output-race .bench-idle
