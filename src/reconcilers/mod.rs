//! One pipeline per kind. The pure parts live here: planning changes and computing status
//! from what was observed, so they are tested without a cluster or AWS.

pub mod artifacts;
pub mod conditions;
pub mod discovery;
pub mod execution_events;
pub mod flow;
pub mod ownership;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod status_budget;
pub mod tenancy;
