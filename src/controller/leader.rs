//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas can run and only one
//! reconciles. Writes use optimistic concurrency (the Lease's `resourceVersion`): of two
//! replicas writing at once, one gets a conflict and stays a follower.
//!
//! Expiry is judged on the local clock, as client-go does: a follower takes over when the
//! Lease record has not changed for a whole lease duration since it first saw it, so clocks
//! that disagree between nodes cannot shorten a leader's term. A leader that cannot renew
//! within the lease duration minus one renew interval stops leading before anyone else may
//! start; a leader that stops cleanly clears the holder, so a follower takes over at its next
//! retry instead of waiting for expiry.
//!
//! `kube-lease-manager` (the maintained crate for kube 5) was not used: its followers sleep
//! until the lease's expiry, so a released lease would still wait out the full duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

/// What this replica should do after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The Lease is free or expired: take it.
    Acquire,
    /// This replica holds it: renew it.
    Renew,
    /// Someone else holds it and it has not expired: wait.
    Follow,
}

/// Decides from the Lease, this replica's identity and how long the record has been seen
/// unchanged (local clock). A Lease naming no duration uses `default_duration`.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for >= duration {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

/// The Lease spec after this replica acquires or renews it.
pub fn claimed(
    previous: Option<&LeaseSpec>,
    identity: &str,
    duration: Duration,
    now: MicroTime,
) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    let taking_over = spec.holder_identity.as_deref() != Some(identity);
    if taking_over {
        spec.acquire_time = Some(now.clone());
        if previous.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX));
    spec.renew_time = Some(now);
    spec
}

/// Where this replica stands after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Leading,
    Following { holder: Option<String> },
}

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {lease} lost to {holder:?}")]
    Lost {
        lease: String,
        holder: Option<String>,
    },
    #[error("lease {lease} not renewed for {elapsed:?}: stepping down before it can expire")]
    RenewDeadline { lease: String, elapsed: Duration },
    #[error("invalid leader election timing: {0}")]
    Timing(String),
}

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub duration: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Timing {
    /// Renewing must leave time before expiry, else a healthy leader would lose its lease.
    pub fn new(duration_s: u64, renew_s: u64, retry_s: u64) -> Result<Timing, LeaderError> {
        if renew_s == 0 || retry_s == 0 || renew_s >= duration_s {
            return Err(LeaderError::Timing(format!(
                "need 0 < renew ({renew_s} s) < lease duration ({duration_s} s) and retry ({retry_s} s) > 0"
            )));
        }
        Ok(Timing {
            duration: Duration::from_secs(duration_s),
            renew: Duration::from_secs(renew_s),
            retry: Duration::from_secs(retry_s),
        })
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    pub identity: String,
    timing: Timing,
    /// The Lease's last seen resourceVersion, and when it was first seen.
    seen: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            seen: None,
        }
    }

    pub fn lease(&self) -> &str {
        &self.name
    }

    /// Reads the Lease and acquires or renews it when this replica may.
    pub async fn try_once(&mut self) -> Result<Standing, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Instant::now();
        let version = current
            .as_ref()
            .and_then(|l| l.resource_version())
            .unwrap_or_default();
        let unchanged_for = match &self.seen {
            Some((seen, since)) if *seen == version => now.duration_since(*since),
            _ => {
                self.seen = Some((version, now));
                Duration::ZERO
            }
        };
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        match decide(spec, &self.identity, unchanged_for, self.timing.duration) {
            Decision::Follow => Ok(Standing::Following {
                holder: spec.and_then(|s| s.holder_identity.clone()),
            }),
            Decision::Acquire | Decision::Renew => {
                let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
                let spec = claimed(spec, &self.identity, self.timing.duration, stamp);
                let written = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.name.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        // The read resourceVersion stays in the metadata: a concurrent write
                        // makes this one fail with a conflict.
                        lease.spec = Some(spec);
                        self.api
                            .replace(&self.name, &PostParams::default(), &lease)
                            .await
                    }
                };
                match written {
                    Ok(lease) => {
                        self.seen = Some((lease.resource_version().unwrap_or_default(), now));
                        Ok(Standing::Leading)
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        Ok(Standing::Following { holder: None })
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Tries every retry interval until this replica leads.
    pub async fn acquire(&mut self) {
        let mut last_holder: Option<Option<String>> = None;
        loop {
            match self.try_once().await {
                Ok(Standing::Leading) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired the leader lease: leading");
                    return;
                }
                Ok(Standing::Following { holder }) => {
                    if holder.is_some() && last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.name, identity = %self.identity, leader = ?holder, "following");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => {
                    warn!(lease = %self.name, %error, "could not read or write the leader lease")
                }
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renews every renew interval; returns when leadership is lost or cannot be kept.
    pub async fn hold(&mut self) -> LeaderError {
        // The term counts from the last write of the Lease that succeeded (the acquisition),
        // not from when holding starts.
        let mut renewed = self.seen.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        let deadline = self.timing.duration.saturating_sub(self.timing.renew);
        loop {
            tokio::time::sleep(self.timing.renew).await;
            // A renewal that hangs (an API server that never answers) must not keep this
            // replica leading past the deadline while a follower takes over.
            let left = deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_once()).await {
                Ok(Ok(Standing::Leading)) => renewed = Instant::now(),
                Ok(Ok(Standing::Following {
                    holder: Some(holder),
                })) => {
                    return LeaderError::Lost {
                        lease: self.name.clone(),
                        holder: Some(holder),
                    };
                }
                Ok(Ok(Standing::Following { holder: None })) => {
                    warn!(lease = %self.name, "conflict renewing the leader lease; retrying");
                }
                Ok(Err(error)) => {
                    warn!(lease = %self.name, %error, "could not renew the leader lease")
                }
                Err(_) => warn!(lease = %self.name, "renewing the leader lease timed out"),
            }
            let elapsed = renewed.elapsed();
            if elapsed >= deadline {
                return LeaderError::RenewDeadline {
                    lease: self.name.clone(),
                    elapsed,
                };
            }
        }
    }

    /// Gives the Lease up (holder cleared) if this replica holds it, so a follower takes over
    /// at its next retry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        info!(lease = %self.name, identity = %self.identity, "released the leader lease");
        Ok(())
    }
}

/// This replica's identity: the pod name, else `hostname-pid`.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flowline".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(15);

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_or_missing_lease_is_acquired() {
        assert_eq!(decide(None, "me", Duration::ZERO, LONG), Decision::Acquire);
        let released = LeaseSpec::default();
        assert_eq!(
            decide(Some(&released), "me", Duration::ZERO, LONG),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("")), "me", Duration::ZERO, LONG),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holder_renews_and_others_follow_until_it_expires() {
        let lease = held_by("other");
        assert_eq!(
            decide(Some(&held_by("me")), "me", Duration::from_secs(60), LONG),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease), "me", Duration::from_secs(14), LONG),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease), "me", Duration::from_secs(15), LONG),
            Decision::Acquire
        );
    }

    #[test]
    fn claiming_counts_transitions_only_on_takeover() {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let first = claimed(None, "a", LONG, now.clone());
        assert_eq!(first.lease_transitions, None);
        assert_eq!(first.holder_identity.as_deref(), Some("a"));
        let renewed = claimed(Some(&first), "a", LONG, now.clone());
        assert_eq!(renewed.lease_transitions, None);
        let taken = claimed(Some(&renewed), "b", LONG, now);
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(15));
    }

    #[test]
    fn renewing_must_leave_time_before_expiry() {
        assert!(Timing::new(15, 5, 2).is_ok());
        assert!(Timing::new(15, 15, 2).is_err());
        assert!(Timing::new(15, 0, 2).is_err());
        assert!(Timing::new(15, 5, 0).is_err());
    }
}
