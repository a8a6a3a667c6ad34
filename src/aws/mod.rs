//! One thin adapter per AWS service, and the classification of their errors.

pub mod batch;
pub mod error;
pub mod events;
pub mod limits;
pub mod s3;
pub mod secrets;
pub mod sfn;
pub mod sqs;
