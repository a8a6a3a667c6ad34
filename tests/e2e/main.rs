//! End-to-end tests: one binary, run by `make test` against the local environment of
//! `hack/env-up.sh` (a real kube-apiserver + kube-controller-manager, and the AWS emulator).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

mod harness;

mod api;
mod artifacts;
mod emulator;
mod execution_events;
mod fault_proxy;
mod flow_controller;
mod foundation;
mod health_script;
mod helm;
mod iam;
mod metaflow;
mod operations;
mod races;
mod render;
mod run_controller;
mod schedule_controller;
mod task_side;
mod task_wrapper;
mod tenancy;
mod user_tools;
