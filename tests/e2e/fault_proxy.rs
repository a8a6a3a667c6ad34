//! The fault proxy used by the chaos benchmark (src/bin/flowline-fault-proxy.rs): the AWS SDK
//! recognises its throttles and 5xx as retryable, retries them, and its counts show it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::harness::env;

struct Proxy {
    child: Child,
    url: String,
}

impl Proxy {
    fn start() -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowline-fault-proxy"))
            .args(["--upstream", &env().aws_endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fault proxy starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        Proxy { child, url }
    }

    fn put_faults(&self, faults: serde_json::Value) {
        let status = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-X",
                "PUT",
                &format!("{}/__faults", self.url),
                "-d",
            ])
            .arg(faults.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn stats(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/__stats", self.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "fault-proxy",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

#[tokio::test]
async fn sdk_retries_the_proxys_throttles_and_succeeds_once_they_stop() {
    let proxy = Proxy::start();
    let config = config(&proxy.url).await;
    let sfn = aws_sdk_sfn::Client::new(&config);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );

    // Every Step Functions and S3 request throttled: each call is attempted 3 times, and the
    // SDK reports the service's own throttling code.
    proxy.put_faults(serde_json::json!({"services": {
        "states": {"throttle": 1.0}, "s3": {"throttle": 1.0}
    }}));
    let err = sfn.list_state_machines().send().await.unwrap_err();
    let err = err.into_service_error();
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code(&err),
        Some("ThrottlingException"),
        "{err:?}"
    );
    let err = s3.list_buckets().send().await.unwrap_err();
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code(&err.into_service_error()),
        Some("SlowDown")
    );
    let stats = proxy.stats();
    let listed = &stats["states"]["ListStateMachines"];
    assert_eq!(
        (
            listed["invocations"].as_u64(),
            listed["attempts"].as_u64(),
            listed["throttle"].as_u64()
        ),
        (Some(1), Some(3), Some(3)),
        "{stats}"
    );

    // Server errors are retried too; once the faults stop, the same call succeeds at once.
    proxy.put_faults(serde_json::json!({"default": {"serverError": 1.0}}));
    assert!(sfn.list_state_machines().send().await.is_err());
    proxy.put_faults(serde_json::json!({}));
    sfn.list_state_machines().send().await.unwrap();
    let stats = proxy.stats();
    let listed = &stats["states"]["ListStateMachines"];
    assert_eq!(
        (
            listed["invocations"].as_u64(),
            listed["attempts"].as_u64(),
            listed["serverError"].as_u64()
        ),
        (Some(3), Some(7), Some(3)),
        "{stats}"
    );
}
