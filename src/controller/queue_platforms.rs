//! The platforms of the job queues Flows name, read once per period for all Flows.
//!
//! Many Flows share a few job queues. Reading a queue and its compute environments in every
//! Flow's drift check made two of each Flow's four reads per drift period, for objects no
//! Flow owns; a queue read here serves every Flow for `ttl`. Only found queues are kept: a
//! missing queue is read again at the next check, so creating it unblocks its Flows at once.
//! A queue changed in the meantime (deleted, moved to other compute environments) is seen
//! after at most `ttl`, and AWS Batch itself refuses a job sent to a missing queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::aws::{self, error::AwsError};

/// Platforms (`EC2`, `FARGATE`) per job queue, by the name or ARN the Flow gave.
pub type Platforms = BTreeMap<String, Vec<String>>;

pub struct QueuePlatforms {
    ttl: Duration,
    known: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl QueuePlatforms {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The platforms of each found queue of `queues`: those read within `ttl` from memory,
    /// the others read from AWS Batch in one call. A queue not found is left out.
    pub async fn get(
        &self,
        client: &aws_sdk_batch::Client,
        queues: &[String],
    ) -> Result<Platforms, AwsError> {
        let (mut found, stale) = split(&self.lock(), queues, Instant::now(), self.ttl);
        if stale.is_empty() {
            return Ok(found);
        }
        let read = aws::batch::queue_platforms(client, &stale).await?;
        let now = Instant::now();
        {
            let mut known = self.lock();
            // Expired entries go as new ones come, so queues no Flow names any more do not
            // stay: the map holds at most the queues read within one `ttl`.
            known.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            for (queue, platforms) in &read {
                known.insert(queue.clone(), (now, platforms.clone()));
            }
        }
        found.extend(read);
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Vec<String>)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Splits `queues` into those known within `ttl` of `now` (with their platforms) and those to
/// read.
fn split(
    known: &HashMap<String, (Instant, Vec<String>)>,
    queues: &[String],
    now: Instant,
    ttl: Duration,
) -> (Platforms, Vec<String>) {
    let mut found = Platforms::new();
    let mut stale = Vec::new();
    for queue in queues {
        match known.get(queue) {
            Some((at, platforms)) if now.duration_since(*at) < ttl => {
                found.insert(queue.clone(), platforms.clone());
            }
            _ => stale.push(queue.clone()),
        }
    }
    (found, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn queues_read_within_the_ttl_come_from_memory_and_the_rest_are_read() {
        let start = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut known = HashMap::new();
        known.insert("fresh".to_owned(), (start, vec!["EC2".to_owned()]));
        known.insert("old".to_owned(), (start, vec!["FARGATE".to_owned()]));
        let later = start + Duration::from_secs(30);
        let (found, stale) = split(&known, &queues(&["fresh", "unknown"]), later, ttl);
        assert_eq!(
            found,
            Platforms::from([("fresh".to_owned(), vec!["EC2".to_owned()])])
        );
        assert_eq!(stale, queues(&["unknown"]));

        let expired = start + Duration::from_secs(60);
        let (found, stale) = split(&known, &queues(&["fresh", "old"]), expired, ttl);
        assert!(found.is_empty());
        assert_eq!(stale, queues(&["fresh", "old"]));
    }

    #[test]
    fn nothing_is_read_when_every_queue_is_known() {
        let now = Instant::now();
        let mut known = HashMap::new();
        known.insert("q".to_owned(), (now, Vec::new()));
        let (found, stale) = split(&known, &queues(&["q"]), now, Duration::from_secs(1));
        assert_eq!(found.len(), 1);
        assert!(stale.is_empty());
    }
}
