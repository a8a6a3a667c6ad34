//! Flowline: a Kubernetes controller that runs Metaflow-style flows on AWS.
//!
//! The crate is laid out as a pure core inside a thin I/O shell (see README.md):
//! [`api`] holds the custom resource types, [`compile`] turns them into AWS resources without
//! any I/O, [`aws`] adapts each AWS service, [`reconcilers`] run one pipeline per kind and
//! [`controller`] wires them to the Kubernetes watch machinery. [`task`] is the task side:
//! `flowline task`, which runs inside a step's container. [`cli`] holds the user's commands
//! (`kubectl flowline run|logs|graph|get|stop|resume`).

pub mod api;
pub mod artifacts;
pub mod aws;
pub mod cli;
pub mod compile;
pub mod controller;
pub mod failpoint;
pub mod iam;
pub mod metaflow;
pub mod metrics;
pub mod reconcilers;
pub mod settings;
pub mod task;
pub mod validate;
