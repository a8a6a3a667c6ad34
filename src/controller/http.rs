//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (a leader whose watches have synced, or a follower standing by).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use crate::api::{Flow, Run, RunPhase};
use crate::metrics::Metrics;

const FOLLOWING: u8 = 1;
const LEADING: u8 = 2;

/// What `/readyz` reports, updated as the replica starts (role 0), follows, leads and syncs.
#[derive(Default)]
pub struct Health {
    role: AtomicU8,
    synced: AtomicBool,
    stores: OnceLock<(Store<Flow>, Store<Run>)>,
}

impl Health {
    pub fn following(&self) {
        self.role.store(FOLLOWING, Ordering::Relaxed);
    }

    pub fn leading(&self) {
        self.role.store(LEADING, Ordering::Relaxed);
    }

    pub fn synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// The watch caches whose sizes `/metrics` reports.
    pub fn set_stores(&self, flows: Store<Flow>, runs: Store<Run>) {
        let _ = self.stores.set((flows, runs));
    }

    /// `(ready, what the replica is doing)`.
    pub fn readiness(&self) -> (bool, &'static str) {
        match (
            self.role.load(Ordering::Relaxed),
            self.synced.load(Ordering::Relaxed),
        ) {
            (FOLLOWING, _) => (true, "follower"),
            (LEADING, true) => (true, "leader"),
            (LEADING, false) => (false, "leader, watches not synced yet"),
            _ => (false, "starting"),
        }
    }

    /// Sets the gauges read from the watch caches.
    fn refresh(&self, metrics: &Metrics) {
        let Some((flows, runs)) = self.stores.get() else {
            return;
        };
        let runs = runs.state();
        metrics.set_objects("Flow", flows.state().len());
        metrics.set_objects("Run", runs.len());
        let phases: Vec<&str> = runs
            .iter()
            .map(|run| {
                phase_name(
                    run.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .unwrap_or(RunPhase::Pending),
                )
            })
            .collect();
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for phase in phases {
            match counts.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, n)) => *n += 1,
                None => counts.push((phase, 1)),
            }
        }
        metrics.set_runs_by_phase(counts);
    }
}

fn phase_name(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Pending => "Pending",
        RunPhase::Running => "Running",
        RunPhase::Succeeded => "Succeeded",
        RunPhase::Failed => "Failed",
        RunPhase::Aborted => "Aborted",
        RunPhase::TimedOut => "TimedOut",
    }
}

/// The answer to one path: status, content type and body.
pub fn respond(
    path: &str,
    health: &Health,
    metrics: &Metrics,
) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/healthz" | "/livez" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let (ready, what) = health.readiness();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, TEXT, format!("{what}\n"))
        }
        "/metrics" => {
            health.refresh(metrics);
            match metrics.encode() {
                Ok(text) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    "encoding failed\n".into(),
                ),
            }
        }
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

/// Binds `addr` (failing fast when it cannot) and serves in the background.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(address = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // E.g. out of file descriptors: pause rather than spin.
                    warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (health, metrics) = (health.clone(), metrics.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (status, content_type, body) =
                        respond(request.uri().path(), &health, &metrics);
                    let response = Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, content_type)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_role_and_the_sync() {
        let health = Health::default();
        assert_eq!(health.readiness(), (false, "starting"));
        health.following();
        assert_eq!(health.readiness(), (true, "follower"));
        health.leading();
        assert!(!health.readiness().0);
        health.synced();
        assert_eq!(health.readiness(), (true, "leader"));
    }

    #[test]
    fn paths_answer() {
        let (health, metrics) = (Health::default(), Metrics::new());
        assert_eq!(respond("/healthz", &health, &metrics).0, StatusCode::OK);
        assert_eq!(
            respond("/readyz", &health, &metrics).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (status, _, body) = respond("/metrics", &health, &metrics);
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("flowline_leader"), "{body}");
        assert_eq!(respond("/nope", &health, &metrics).0, StatusCode::NOT_FOUND);
    }
}
