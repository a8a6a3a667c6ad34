//! A fault-injecting HTTP proxy for the chaos tests: it stands between the controller and the
//! AWS emulator (plain HTTP on loopback, `AWS_ENDPOINT_URL` style), forwards every request and,
//! per AWS service, answers some with a throttle or a 5xx in that service's own protocol, delays
//! some, and drops the connection of some without answering. Test tooling (feature `e2e`), never
//! shipped.
//!
//! The service comes from the SigV4 credential scope (`…/<region>/<service>/aws4_request`), so
//! rates can differ per service. Control endpoints, answered by the proxy itself:
//! `GET|PUT /__faults` (the rates, JSON), `GET /__stats` (per service and operation: requests,
//! faults by kind, and SDK invocations vs attempts from `amz-sdk-request: attempt=N; max=M`, so
//! retries per call = attempts / invocations), `POST /__stats/reset`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(about = "Fault-injecting proxy in front of the AWS emulator (tests only)")]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, env = "FLOWLINE_FAULT_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The emulator, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "FLOWLINE_FAULT_UPSTREAM")]
    upstream: String,
    /// Share of requests answered with the service's throttling error (0..1).
    #[arg(long, env = "FLOWLINE_FAULT_THROTTLE", default_value_t = 0.0)]
    throttle: f64,
    /// Share of requests answered with a 500/503.
    #[arg(long, env = "FLOWLINE_FAULT_SERVER_ERROR", default_value_t = 0.0)]
    server_error: f64,
    /// Share of requests delayed by `latency_ms` before being forwarded.
    #[arg(long, env = "FLOWLINE_FAULT_LATENCY", default_value_t = 0.0)]
    latency: f64,
    #[arg(long, env = "FLOWLINE_FAULT_LATENCY_MS", default_value_t = 500)]
    latency_ms: u64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, env = "FLOWLINE_FAULT_DROP", default_value_t = 0.0)]
    drop: f64,
    /// Seed of the fault decisions (repeatable runs).
    #[arg(long, env = "FLOWLINE_FAULT_SEED", default_value_t = 1)]
    seed: u64,
}

/// Fault rates of one service (each a share of requests, 0..1; their sum at most 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Rates {
    throttle: f64,
    server_error: f64,
    latency: f64,
    latency_ms: u64,
    drop: f64,
}

/// The rates in force: a default and per-service overrides (`states`, `batch`, `s3`, …).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Faults {
    default: Rates,
    services: BTreeMap<String, Rates>,
}

impl Faults {
    fn for_service(&self, service: &str) -> Rates {
        self.services.get(service).copied().unwrap_or(self.default)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Throttle,
    ServerError,
    Latency,
    Drop,
}

/// The fault for a request, from a uniform `roll` in [0, 1): the rates are stacked in a fixed
/// order, so a roll falls in at most one of them.
fn decide(rates: &Rates, roll: f64) -> Option<Fault> {
    let mut edge = 0.0;
    for (rate, fault) in [
        (rates.throttle, Fault::Throttle),
        (rates.server_error, Fault::ServerError),
        (rates.drop, Fault::Drop),
        (rates.latency, Fault::Latency),
    ] {
        edge += rate.max(0.0);
        if roll < edge {
            return Some(fault);
        }
    }
    None
}

/// The service of a SigV4-signed request: the fourth field of the credential scope
/// (`Credential=AKID/20261203/us-east-1/states/aws4_request`). `unsigned` otherwise.
fn service_of(authorization: Option<&str>) -> String {
    authorization
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|cred| cred.split([',', ' ']).next())
        .and_then(|scope| scope.split('/').nth(3))
        .map(str::to_owned)
        .unwrap_or_else(|| "unsigned".to_owned())
}

/// The wire protocol of a request, which decides the shape of an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// awsJson 1.0/1.1: Step Functions, EventBridge, Secrets Manager, SQS (JSON), Logs.
    Json,
    /// REST-JSON: Batch.
    RestJson,
    /// AWS query with XML answers: STS, IAM, SQS (query).
    Query,
    /// S3's REST-XML.
    S3,
}

fn protocol_of(service: &str, content_type: Option<&str>) -> Protocol {
    match service {
        "s3" => Protocol::S3,
        "batch" => Protocol::RestJson,
        _ if content_type.is_some_and(|c| c.starts_with("application/x-amz-json")) => {
            Protocol::Json
        }
        _ => Protocol::Query,
    }
}

/// The answer AWS gives for a throttle or a server fault, in the request's protocol: the error
/// codes are the ones the SDKs classify as throttling (`ThrottlingException`, `Throttling`,
/// `TooManyRequestsException`, `SlowDown`) or transient (500/503).
fn error_response(protocol: Protocol, fault: Fault, roll: f64) -> (StatusCode, String, String) {
    let (status, code, message) = match (protocol, fault) {
        (Protocol::Json, Fault::Throttle) => (400, "ThrottlingException", "Rate exceeded"),
        (Protocol::RestJson, Fault::Throttle) => {
            (429, "TooManyRequestsException", "Too Many Requests")
        }
        (Protocol::Query, Fault::Throttle) => (400, "Throttling", "Rate exceeded"),
        (Protocol::S3, Fault::Throttle) => (503, "SlowDown", "Please reduce your request rate."),
        (Protocol::S3, _) if roll < 0.5 => {
            (500, "InternalError", "We encountered an internal error.")
        }
        (Protocol::S3, _) => (
            503,
            "ServiceUnavailable",
            "Service is unable to handle request.",
        ),
        (_, _) if roll < 0.5 => (500, "InternalFailure", "The request processing has failed."),
        (_, _) => (503, "ServiceUnavailable", "The service is unavailable."),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match protocol {
        Protocol::Json => serde_json::json!({"__type": code, "message": message}).to_string(),
        Protocol::RestJson => serde_json::json!({"message": message}).to_string(),
        Protocol::Query => format!(
            "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>",
            if status.is_server_error() {
                "Receiver"
            } else {
                "Sender"
            }
        ),
        Protocol::S3 => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        ),
    };
    (status, code.to_owned(), body)
}

/// The operation, for the statistics: X-Amz-Target's action, `Action=` of a query request, or
/// the method and first path segment of a REST request.
fn operation_of(
    target: Option<&str>,
    query: Option<&str>,
    body: &[u8],
    method: &str,
    path: &str,
) -> String {
    if let Some(target) = target {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    let action = |s: &str| {
        s.split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_owned)
    };
    if let Some(found) = query.and_then(action) {
        return found;
    }
    if let Some(found) = std::str::from_utf8(body).ok().and_then(action) {
        return found;
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let first = if first.starts_with("v1") {
        path.trim_start_matches('/').split('/').nth(1).unwrap_or("")
    } else {
        first
    };
    format!("{method} /{first}")
}

/// The attempt number of an SDK request (`amz-sdk-request: attempt=2; max=3`).
fn attempt_of(header: Option<&str>) -> Option<u64> {
    header?
        .split(';')
        .find_map(|part| part.trim().strip_prefix("attempt="))
        .and_then(|n| n.trim().parse().ok())
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    requests: u64,
    throttle: u64,
    server_error: u64,
    latency: u64,
    drop: u64,
    /// SDK calls (first attempts) and all their attempts.
    invocations: u64,
    attempts: u64,
    max_attempt: u64,
}

impl Counts {
    fn count(&mut self, fault: Option<Fault>, attempt: Option<u64>) {
        self.requests += 1;
        match fault {
            Some(Fault::Throttle) => self.throttle += 1,
            Some(Fault::ServerError) => self.server_error += 1,
            Some(Fault::Latency) => self.latency += 1,
            Some(Fault::Drop) => self.drop += 1,
            None => {}
        }
        if let Some(attempt) = attempt {
            self.attempts += 1;
            if attempt == 1 {
                self.invocations += 1;
            }
            self.max_attempt = self.max_attempt.max(attempt);
        }
    }
}

/// xorshift64*: enough randomness for fault decisions, seeded for repeatable runs.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct State {
    upstream: String,
    faults: Faults,
    rng: Rng,
    /// service -> operation -> counts.
    stats: BTreeMap<String, BTreeMap<String, Counts>>,
}

type Shared = Arc<Mutex<State>>;

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("connection dropped on purpose")]
    Dropped,
    #[error("upstream: {0}")]
    Upstream(String),
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

async fn control(
    state: &Shared,
    method: &hyper::Method,
    path: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let Ok(mut state) = state.lock() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "poisoned".into(),
        );
    };
    match (method.as_str(), path) {
        ("GET", "/__faults") => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&state.faults).unwrap_or_default(),
        ),
        ("PUT", "/__faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(faults) => {
                state.faults = faults;
                text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&state.faults).unwrap_or_default(),
                )
            }
            Err(e) => text(StatusCode::BAD_REQUEST, "text/plain", e.to_string()),
        },
        ("GET", "/__stats") => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&state.stats).unwrap_or_default(),
        ),
        ("POST", "/__stats/reset") => {
            state.stats.clear();
            text(StatusCode::OK, "application/json", "{}".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown control endpoint".into(),
        ),
    }
}

async fn handle(
    state: Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| ProxyError::Upstream(e.to_string()))?
        .to_bytes();
    let path = parts.uri.path().to_owned();
    if path.starts_with("/__") {
        return Ok(control(&state, &parts.method, &path, &body).await);
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let service = service_of(header("authorization"));
    let operation = operation_of(
        header("x-amz-target"),
        parts.uri.query(),
        &body,
        parts.method.as_str(),
        &path,
    );
    let protocol = protocol_of(&service, header("content-type"));
    let attempt = attempt_of(header("amz-sdk-request"));
    let (fault, roll, latency, upstream) = {
        let mut state = state
            .lock()
            .map_err(|_| ProxyError::Upstream("poisoned".into()))?;
        let rates = state.faults.for_service(&service);
        let fault = decide(&rates, state.rng.next_f64());
        let roll = state.rng.next_f64();
        state
            .stats
            .entry(service)
            .or_default()
            .entry(operation)
            .or_default()
            .count(fault, attempt);
        (fault, roll, rates.latency_ms, state.upstream.clone())
    };
    match fault {
        Some(Fault::Drop) => return Err(ProxyError::Dropped),
        Some(kind @ (Fault::Throttle | Fault::ServerError)) => {
            let (status, code, body) = error_response(protocol, kind, roll);
            let content_type = match protocol {
                Protocol::Json => "application/x-amz-json-1.0",
                Protocol::RestJson => "application/json",
                Protocol::Query | Protocol::S3 => "text/xml",
            };
            let mut response = text(status, content_type, body);
            if matches!(protocol, Protocol::Json | Protocol::RestJson)
                && let Ok(value) = code.parse()
            {
                response.headers_mut().insert("x-amzn-errortype", value);
            }
            return Ok(response);
        }
        Some(Fault::Latency) => tokio::time::sleep(Duration::from_millis(latency)).await,
        None => {}
    }
    forward(&upstream, parts, body).await
}

async fn forward(
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let up = |e: &dyn std::fmt::Display| ProxyError::Upstream(e.to_string());
    let stream = TcpStream::connect(upstream).await.map_err(|e| up(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| up(&e))?;
    tokio::spawn(connection);
    let request = Request::from_parts(parts, Full::new(body));
    let response = sender.send_request(request).await.map_err(|e| up(&e))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| up(&e))?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = args
        .upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let default = Rates {
        throttle: args.throttle,
        server_error: args.server_error,
        latency: args.latency,
        latency_ms: args.latency_ms,
        drop: args.drop,
    };
    let state: Shared = Arc::new(Mutex::new(State {
        upstream,
        faults: Faults {
            default,
            services: BTreeMap::new(),
        },
        rng: Rng(args.seed.max(1)),
        stats: BTreeMap::new(),
    }));
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
            // A dropped fault ends the connection with an error: expected, not reported.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_stacked_so_each_roll_gets_at_most_one_fault() {
        let rates = Rates {
            throttle: 0.1,
            server_error: 0.1,
            drop: 0.1,
            latency: 0.1,
            latency_ms: 5,
        };
        assert_eq!(decide(&rates, 0.05), Some(Fault::Throttle));
        assert_eq!(decide(&rates, 0.15), Some(Fault::ServerError));
        assert_eq!(decide(&rates, 0.25), Some(Fault::Drop));
        assert_eq!(decide(&rates, 0.35), Some(Fault::Latency));
        assert_eq!(decide(&rates, 0.45), None);
        assert_eq!(decide(&Rates::default(), 0.0), None);
    }

    #[test]
    fn seeded_rolls_hit_the_configured_share() {
        let rates = Rates {
            throttle: 0.2,
            ..Rates::default()
        };
        let mut rng = Rng(7);
        let hits = (0..10_000)
            .filter(|_| decide(&rates, rng.next_f64()).is_some())
            .count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
    }

    #[test]
    fn service_comes_from_the_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/states/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(service_of(Some(auth)), "states");
        assert_eq!(service_of(None), "unsigned");
    }

    #[test]
    fn throttles_speak_each_services_protocol() {
        let (status, code, body) = error_response(Protocol::Json, Fault::Throttle, 0.0);
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (400, "ThrottlingException")
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["__type"],
            "ThrottlingException"
        );
        let (status, code, _) = error_response(Protocol::RestJson, Fault::Throttle, 0.0);
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (429, "TooManyRequestsException")
        );
        let (status, _, body) = error_response(Protocol::Query, Fault::Throttle, 0.0);
        assert_eq!(status.as_u16(), 400);
        assert!(body.contains("<Code>Throttling</Code>"), "{body}");
        let (status, _, body) = error_response(Protocol::S3, Fault::Throttle, 0.0);
        assert_eq!(status.as_u16(), 503);
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        let (status, code, _) = error_response(Protocol::Json, Fault::ServerError, 0.9);
        assert_eq!(
            (status.as_u16(), code.as_str()),
            (503, "ServiceUnavailable")
        );
        let (status, code, _) = error_response(Protocol::Query, Fault::ServerError, 0.1);
        assert_eq!((status.as_u16(), code.as_str()), (500, "InternalFailure"));
    }

    #[test]
    fn protocol_follows_service_and_content_type() {
        assert_eq!(protocol_of("s3", None), Protocol::S3);
        assert_eq!(
            protocol_of("batch", Some("application/json")),
            Protocol::RestJson
        );
        assert_eq!(
            protocol_of("sqs", Some("application/x-amz-json-1.0")),
            Protocol::Json
        );
        assert_eq!(
            protocol_of("sts", Some("application/x-www-form-urlencoded")),
            Protocol::Query
        );
    }

    #[test]
    fn operations_and_attempts_are_read_from_the_request() {
        assert_eq!(
            operation_of(
                Some("AWSStepFunctions.StartExecution"),
                None,
                b"",
                "POST",
                "/"
            ),
            "StartExecution"
        );
        assert_eq!(
            operation_of(
                None,
                None,
                b"Action=GetCallerIdentity&Version=2011-06-15",
                "POST",
                "/"
            ),
            "GetCallerIdentity"
        );
        assert_eq!(
            operation_of(None, None, b"{}", "POST", "/v1/submitjob"),
            "POST /submitjob"
        );
        assert_eq!(attempt_of(Some("attempt=2; max=3")), Some(2));
        assert_eq!(attempt_of(None), None);
        let mut counts = Counts::default();
        counts.count(None, Some(1));
        counts.count(Some(Fault::Throttle), Some(1));
        counts.count(None, Some(2));
        assert_eq!(
            (
                counts.requests,
                counts.invocations,
                counts.attempts,
                counts.throttle,
                counts.max_attempt
            ),
            (3, 2, 3, 1, 2)
        );
    }
}
