//! End-to-end tests: one binary, run by `make test` against the local environment of
//! `hack/env-up.sh` (a real kube-apiserver + kube-controller-manager, and the AWS emulator).

mod harness;

mod emulator;
mod foundation;
