//! The controller's Prometheus metrics. One [`Metrics`] per process, shared through the
//! reconcile context and read by the `/metrics` endpoint. Label values are bounded sets (kinds,
//! outcomes, error classes, AWS operations, run phases): no object names, so cardinality stays
//! fixed however many Flows and Runs exist.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `kind` and `outcome` of a finished reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub outcome: String,
}

/// A failed reconcile: its kind, class (terminal, retryable, conflict) and error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub class: String,
    pub code: String,
}

/// A kind alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// One AWS API call: service, operation and outcome (`success`, `throttled`, `terminal`,
/// `retryable`, `conflict`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
}

/// One AWS operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsOperationLabels {
    pub service: String,
    pub operation: String,
}

/// A Run phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub reconciles_in_flight: Family<KindLabels, Gauge>,
    pub objects: Family<KindLabels, Gauge>,
    pub aws_calls: Family<AwsCallLabels, Counter>,
    pub aws_rate_limit_wait: Family<AwsOperationLabels, Counter<f64, AtomicU64>>,
    pub runs_by_phase: Family<PhaseLabels, Gauge>,
    pub leader: Gauge,
    pub cached_entries: Gauge,
    pub execution_events_ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flowline");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles finished, by kind and outcome (success or error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by kind, error class (terminal, retryable, conflict) and code",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes, AWS and API server calls included",
            reconcile_duration.clone(),
        );
        let reconciles_in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now, by kind (kube-runtime does not expose its queue depth)",
            reconciles_in_flight.clone(),
        );
        let objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "objects",
            "Objects in the controller's watch cache, by kind",
            objects.clone(),
        );
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "AWS API calls, by service, operation and outcome",
            aws_calls.clone(),
        );
        let aws_rate_limit_wait = Family::<AwsOperationLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "aws_rate_limit_wait_seconds",
            "Time spent waiting for the client-side AWS rate limit, by operation",
            aws_rate_limit_wait.clone(),
        );
        let runs_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "runs",
            "Runs in the watch cache, by phase",
            runs_by_phase.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let cached_entries = Gauge::default();
        registry.register(
            "cached_entries",
            "Entries of the per-object in-memory caches (failure counts, discovery cursors, histories, secrets clients...), counted at each eviction pass",
            cached_entries.clone(),
        );
        let execution_events_ready = Gauge::default();
        registry.register(
            "execution_events_ready",
            "1 while Runs are woken by execution status change events (the managed rule and queue were as wanted at the last check, or a queue URL was given); 0 while Runs are tracked by polling alone",
            execution_events_ready.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_in_flight,
            objects,
            aws_calls,
            aws_rate_limit_wait,
            runs_by_phase,
            leader,
            cached_entries,
            execution_events_ready,
        }
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts one finished reconcile and its duration.
    pub fn reconciled(&self, kind: &str, outcome: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts one failed reconcile by class and code.
    pub fn reconcile_failed(&self, kind: &str, class: &str, code: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                class: class.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// The gauge of reconciles in flight for a kind.
    pub fn in_flight(&self, kind: &str) -> Gauge {
        self.reconciles_in_flight.get_or_create_owned(&KindLabels {
            kind: kind.to_owned(),
        })
    }

    /// Sets how many objects of a kind are cached.
    pub fn set_objects(&self, kind: &str, count: usize) {
        self.objects
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Replaces the Runs-by-phase gauge; phases absent from `counts` drop to zero.
    pub fn set_runs_by_phase<'a>(&self, counts: impl IntoIterator<Item = (&'a str, usize)>) {
        for phase in RUN_PHASES {
            self.runs_by_phase
                .get_or_create(&PhaseLabels {
                    phase: (*phase).to_owned(),
                })
                .set(0);
        }
        for (phase, count) in counts {
            self.runs_by_phase
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .inc_by(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts one AWS call.
    pub fn aws_call(&self, service: &str, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&AwsCallLabels {
                service: service.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Adds time spent waiting for a rate-limit token.
    pub fn aws_waited(&self, service: &str, operation: &str, seconds: f64) {
        self.aws_rate_limit_wait
            .get_or_create(&AwsOperationLabels {
                service: service.to_owned(),
                operation: operation.to_owned(),
            })
            .inc_by(seconds);
    }
}

/// The phases the Runs gauge always reports (zero included), so dashboards see every series.
const RUN_PHASES: &[&str] = &[
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "Aborted",
    "TimedOut",
];

/// 5 ms to about 82 s: from a no-op reconcile to one waiting on a rate-limited AWS call.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_families_with_their_labels() {
        let metrics = Metrics::new();
        metrics.reconciled("Flow", "success", 0.02);
        metrics.reconcile_failed("Flow", "retryable", "Unavailable");
        metrics.aws_call("states", "DescribeExecution", "success");
        metrics.set_runs_by_phase([("Running", 2)]);
        metrics.leader.set(1);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"flowline_reconciles_total{kind="Flow",outcome="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"flowline_aws_calls_total{service="states",operation="DescribeExecution",outcome="success"} 1"#
        ));
        assert!(text.contains(r#"flowline_runs{phase="Running"} 2"#));
        assert!(text.contains(r#"flowline_runs{phase="Failed"} 0"#));
        assert!(text.contains("flowline_leader 1"));
        assert!(text.contains("flowline_reconcile_duration_seconds_bucket"));
    }
}
