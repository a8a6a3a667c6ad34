//! Pure compilation of Flowline resources into the AWS resources they become. No I/O here:
//! what this module returns is what the reconcilers apply and what `flowline render` prints.

pub mod asl_check;
pub mod graph;
pub mod naming;
