# Flowline's entry points; each target is a script under hack/ that also runs on its own.
.PHONY: demo test env-up env-down env-status crds fmt lint install

## Run the demo: local control plane + AWS emulator, CRDs, an example flow.
demo:
	hack/demo.sh

## Run every test (lints, unit, e2e against a fresh local environment).
test:
	hack/test.sh

## Start the local environment and print how to use it.
env-up:
	hack/env-up.sh

## Stop the local environment, leaving nothing running.
env-down:
	hack/env-down.sh

env-status:
	hack/env-status.sh

## Regenerate crds/ from the Rust types, and the Helm chart's copy of them.
crds:
	cargo run --quiet -- crds > crds/flowline.io_crds.yaml
	cp crds/flowline.io_crds.yaml charts/flowline/crds/flowline.io_crds.yaml

## Install `flowline` and the kubectl plugin `kubectl-flowline` into ~/.cargo/bin (on PATH,
## kubectl finds the plugin: `kubectl flowline run …`).
install:
	cargo install --locked --path . --bins

fmt:
	cargo fmt --all

lint:
	cargo clippy --all-targets --features e2e -- -D warnings
