//! Snapshot of every role's policies for an example installation, reviewed like code: a change
//! to what the controller or the state machines need shows up here as a diff of permissions.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use flowline::iam::{self, Inputs, Role};
use flowline::settings::Settings;

#[test]
fn all_roles_for_an_example_installation() {
    let settings = Settings {
        s3_root: "s3://example-ml/flowline".into(),
        job_queue: "flowline-default".into(),
        job_role: Some("arn:aws:iam::111122223333:role/flowline-job".into()),
        execution_role: Some("arn:aws:iam::111122223333:role/flowline-execution".into()),
        states_role: "arn:aws:iam::111122223333:role/flowline-states".into(),
        events_role: "arn:aws:iam::111122223333:role/flowline-events".into(),
        s3_server_side_encryption: Some("aws:kms".into()),
        s3_kms_key_id: Some(
            "arn:aws:kms:us-west-2:111122223333:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
        ),
        secrets_role: Some("arn:aws:iam::444455556666:role/flowline-secrets".into()),
        region: "us-west-2".into(),
        account: Some("111122223333".into()),
        ..Settings::default()
    };
    let inputs = Inputs {
        job_queues: vec!["flowline-gpu".into()],
        secrets: vec!["prod/db-password".into()],
        job_roles: Vec::new(),
        secret_roles: Vec::new(),
        tenants: Vec::new(),
    };
    let policies = iam::policies(&settings, &inputs, &Role::ALL);
    insta::assert_json_snapshot!("all", policies);
}
