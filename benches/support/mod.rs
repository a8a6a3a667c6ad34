//! What the environment benchmarks share: a namespace of their own watched by a fresh
//! `flowline controller` with an AWS access key of its own (so the emulator's request counts
//! are the controller's alone), and small statistics helpers.
#![allow(dead_code)] // Not every benchmark uses every helper.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};

/// A benchmark's namespace and controller. The controller is killed when this is dropped,
/// on every exit path, panics included.
pub struct Bench {
    pub endpoint: String,
    pub client: Client,
    pub namespace: String,
    pub access_key: String,
    controller: Child,
    extra_env: Vec<(String, String)>,
}

impl Bench {
    /// Creates the namespace `<prefix>-<pid>` and starts a controller watching it, with
    /// `extra_env` added to its environment.
    pub async fn start(prefix: &str, extra_env: &[(&str, &str)]) -> Bench {
        let endpoint = std::env::var("FLOWLINE_AWS_ENDPOINT")
            .expect("FLOWLINE_AWS_ENDPOINT is not set: source the environment's env.sh first");
        let client = Client::try_default()
            .await
            .expect("kube client from KUBECONFIG");
        let namespace = format!("{prefix}-{}", std::process::id());
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
                    .unwrap(),
            )
            .await
            .expect("namespace");
        let access_key = format!("{}{}", prefix.to_uppercase(), std::process::id());
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let controller = spawn_controller(&namespace, &endpoint, &access_key, &extra_env);
        Bench {
            endpoint,
            client,
            namespace,
            access_key,
            controller,
            extra_env,
        }
    }

    /// Where the controller's logs go.
    pub fn controller_log(&self) -> std::path::PathBuf {
        log_path(&self.namespace)
    }

    /// The controller's process id (for its memory and CPU in /proc).
    pub fn controller_pid(&self) -> u32 {
        self.controller.id()
    }

    /// Kills the controller (SIGKILL) and starts a fresh one with the same environment.
    pub fn restart_controller(&mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
        self.controller = spawn_controller(
            &self.namespace,
            &self.endpoint,
            &self.access_key,
            &self.extra_env,
        );
    }

    /// Kills the controller; `restart_controller` starts it again.
    pub fn stop_controller(&mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }

    /// The controller's requests to the emulator, by `service:Operation`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/flowline-test/requests", self.endpoint)])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["byAccessKey"][self.access_key.as_str()]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the controller and deletes the namespace. Delete the objects with finalizers
    /// first, while the controller still runs.
    pub async fn finish(mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &Default::default())
            .await;
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

/// Starts `flowline controller` watching `namespace`, its log in the temp directory.
fn spawn_controller(
    namespace: &str,
    endpoint: &str,
    access_key: &str,
    extra_env: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(namespace))
        .unwrap();
    // FLOWLINE_BENCH_CONTROLLER runs another build (say, the one before a change) instead.
    let binary = std::env::var("FLOWLINE_BENCH_CONTROLLER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_flowline").to_string());
    Command::new(binary)
        .arg("controller")
        .env("FLOWLINE_WATCH_NAMESPACE", namespace)
        .env("FLOWLINE_S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        // FLOWLINE_BENCH_LOG=debug logs each AWS call and reconcile with its timing.
        .env(
            "RUST_LOG",
            std::env::var("FLOWLINE_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        // One controller alone, measured against the emulator: no Lease, no endpoint,
        // and no client-side AWS rate limits (AWS's quotas would dominate the figures).
        .env("FLOWLINE_LEADER_ELECTION", "false")
        .env("FLOWLINE_HTTP_ADDR", "off")
        .env("FLOWLINE_AWS_RATE_SCALE", "0")
        // Polling only, as the figures were taken; a benchmark of the events path sets it.
        .env("FLOWLINE_EXECUTION_EVENTS", "off")
        .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // The controller logs to stdout.
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("controller starts")
}

fn log_path(namespace: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{namespace}-controller.log"))
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
