//! Status conditions in the kstatus convention that Argo CD and Flux read: `Ready` is the
//! summary, `Reconciling` and `Stalled` are true only while they apply. Transition times move
//! only when a condition's status changes, so an unchanged outcome yields an equal status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::RunPhase;
use crate::api::condition::{FINISHED, READY, RECONCILING, STALLED};

/// The health a reconcile reports.
#[derive(Debug, Clone, Copy)]
pub enum Health<'a> {
    Ready { reason: &'a str, message: &'a str },
    Reconciling { reason: &'a str, message: &'a str },
    Stalled { reason: &'a str, message: &'a str },
}

/// Sets the three conditions for `health`.
pub fn set_health(
    conditions: &mut Vec<Condition>,
    health: Health<'_>,
    generation: Option<i64>,
    now: &Time,
) {
    let (ready, reconciling, stalled, reason, message) = match health {
        Health::Ready { reason, message } => ("True", "False", "False", reason, message),
        Health::Reconciling { reason, message } => ("False", "True", "False", reason, message),
        Health::Stalled { reason, message } => ("False", "False", "True", reason, message),
    };
    set(conditions, READY, ready, reason, message, generation, now);
    set(
        conditions,
        RECONCILING,
        reconciling,
        reason,
        message,
        generation,
        now,
    );
    set(
        conditions, STALLED, stalled, reason, message, generation, now,
    );
}

/// The health of a Run in `phase`: `Ready` only once it succeeded (so `kubectl wait
/// --for=condition=Ready` waits for success), `Stalled` with the phase as the reason once it
/// failed, timed out or was aborted (nothing will change it; GitOps tools show it degraded),
/// `Reconciling` while it is pending or running. `message` says why.
pub fn run_health(phase: RunPhase, message: &str) -> Health<'_> {
    match phase {
        RunPhase::Succeeded => Health::Ready {
            reason: "Succeeded",
            message,
        },
        RunPhase::Failed => Health::Stalled {
            reason: "Failed",
            message,
        },
        RunPhase::Aborted => Health::Stalled {
            reason: "Aborted",
            message,
        },
        RunPhase::TimedOut => Health::Stalled {
            reason: "TimedOut",
            message,
        },
        RunPhase::Pending | RunPhase::Running => Health::Reconciling {
            reason: "Running",
            message,
        },
    }
}

/// A Run's `Finished` condition: true once its execution ended, whatever the outcome, so
/// `kubectl wait --for=condition=Finished` waits for the end.
pub fn set_finished(
    conditions: &mut Vec<Condition>,
    phase: Option<RunPhase>,
    generation: Option<i64>,
    now: &Time,
) {
    let (status, reason, message) = match phase {
        Some(phase) if phase.is_finished() => {
            ("True", format!("{phase:?}"), "the execution has ended")
        }
        _ => (
            "False",
            "NotFinished".to_owned(),
            "the execution has not ended",
        ),
    };
    set(
        conditions, FINISHED, status, &reason, message, generation, now,
    );
}

/// Upserts one condition, keeping its transition time when its status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    // Condition messages are limited to 32 KiB by the API; keep them readable anyway.
    let message: String = message.chars().take(2048).collect();
    let next = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let transition = if existing.status == status {
                existing.last_transition_time.clone()
            } else {
                now.clone()
            };
            *existing = Condition {
                last_transition_time: transition,
                ..next
            };
        }
        None => conditions.push(next),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    use super::*;

    #[test]
    fn a_run_is_ready_only_when_it_succeeded_and_finished_whatever_its_outcome() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let status_of = |conditions: &[Condition], type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| (c.status.clone(), c.reason.clone()))
                .unwrap()
        };
        for (phase, ready, stalled, finished) in [
            (RunPhase::Succeeded, "True", "False", "True"),
            (RunPhase::Failed, "False", "True", "True"),
            (RunPhase::Aborted, "False", "True", "True"),
            (RunPhase::TimedOut, "False", "True", "True"),
            (RunPhase::Running, "False", "False", "False"),
            (RunPhase::Pending, "False", "False", "False"),
        ] {
            let mut conditions = Vec::new();
            set_health(&mut conditions, run_health(phase, "m"), Some(1), &now);
            set_finished(&mut conditions, Some(phase), Some(1), &now);
            assert_eq!(status_of(&conditions, READY).0, ready, "{phase:?}");
            assert_eq!(status_of(&conditions, STALLED).0, stalled, "{phase:?}");
            assert_eq!(status_of(&conditions, FINISHED).0, finished, "{phase:?}");
            if phase.is_finished() {
                assert_eq!(status_of(&conditions, FINISHED).1, format!("{phase:?}"));
                assert_eq!(status_of(&conditions, READY).1, format!("{phase:?}"));
            }
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0 = Time(Timestamp::UNIX_EPOCH);
        let t1 = Time(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(10));
        let mut conditions = Vec::new();
        set_health(
            &mut conditions,
            Health::Ready {
                reason: "Applied",
                message: "ok",
            },
            Some(1),
            &t0,
        );
        set_health(
            &mut conditions,
            Health::Ready {
                reason: "Applied",
                message: "ok",
            },
            Some(2),
            &t1,
        );
        let ready = conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.last_transition_time, t0);
        assert_eq!(ready.observed_generation, Some(2));
        set_health(
            &mut conditions,
            Health::Stalled {
                reason: "InvalidGraph",
                message: "bad",
            },
            Some(3),
            &t1,
        );
        let stalled = conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), &stalled.last_transition_time),
            ("True", &t1)
        );
        assert_eq!(conditions.len(), 3);
    }
}
