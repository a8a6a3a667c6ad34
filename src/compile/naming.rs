//! Deterministic AWS names.
//!
//! Idempotency comes from names, not from check-then-act: the same Kubernetes object always
//! maps to the same AWS name, so a retried create after a crash finds (or conflicts with) what
//! the first attempt made instead of making a second one. Each name carries a short hash of
//! the object's UID, so a Flow deleted and re-created under the same name never adopts the AWS
//! resources of its predecessor, and each fits its service's length and character limits.

use sha2::{Digest, Sha256};

/// Step Functions state machine and execution names: 1–80 characters.
pub const STATE_MACHINE_NAME_MAX: usize = 80;
/// Batch job definition and job names: 1–128 characters.
pub const JOB_DEFINITION_NAME_MAX: usize = 128;
/// EventBridge rule names: 1–64 characters.
pub const RULE_NAME_MAX: usize = 64;
/// Step Functions execution names: 1–80 characters.
pub const EXECUTION_NAME_MAX: usize = 80;

/// Length of the hex hashes appended to names.
const HASH_LEN: usize = 8;

/// Lowercase hex of the SHA-256 of `input`, first `len` characters (`len` ≤ 64).
pub fn short_hash(input: &str, len: usize) -> String {
    hex_prefix(&Sha256::digest(input.as_bytes()), len)
}

/// Short hash of a value's JSON form, streamed into the hasher (no intermediate string).
pub fn json_hash<T: serde::Serialize + ?Sized>(value: &T, len: usize) -> String {
    struct HashWriter(Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(Sha256::new());
    // Serializing plain data into a writer that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut writer, value);
    hex_prefix(&writer.0.finalize(), len)
}

fn hex_prefix(digest: &[u8], len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    hex.truncate(len);
    hex
}

/// Keeps the characters every target service accepts (letters, digits, `-`, `_`); anything
/// else (such as the dots Kubernetes allows in names) becomes `-`.
fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Joins `parts` with `-`, appends `-<hash of uid>`, and fits the result in `max` characters:
/// when too long, the readable part is cut and a hash of the full readable part is added so
/// two long names sharing a prefix still differ.
pub fn fit_name(prefix: &str, parts: &[&str], uid: &str, max: usize) -> String {
    let readable = format!(
        "{}{}",
        sanitize(prefix),
        parts
            .iter()
            .map(|p| sanitize(p))
            .collect::<Vec<_>>()
            .join("-")
    );
    let uid_hash = short_hash(uid, HASH_LEN);
    let full = format!("{readable}-{uid_hash}");
    if full.len() <= max {
        return full;
    }
    let readable_hash = short_hash(&readable, HASH_LEN);
    // `<cut>-<readable hash>-<uid hash>`
    let keep = max.saturating_sub(2 * HASH_LEN + 2);
    let cut: String = readable.chars().take(keep).collect();
    let cut = cut.trim_end_matches(['-', '_']);
    format!("{cut}-{readable_hash}-{uid_hash}")
}

/// The state machine of a Flow.
pub fn state_machine_name(prefix: &str, namespace: &str, flow: &str, flow_uid: &str) -> String {
    fit_name(prefix, &[namespace, flow], flow_uid, STATE_MACHINE_NAME_MAX)
}

/// A job definition of a Flow. `content_key` distinguishes definitions that differ in
/// content (steps with identical definitions share one name and one revision).
pub fn job_definition_name(
    prefix: &str,
    namespace: &str,
    flow: &str,
    content_key: &str,
    flow_uid: &str,
) -> String {
    fit_name(
        prefix,
        &[namespace, flow, content_key],
        flow_uid,
        JOB_DEFINITION_NAME_MAX,
    )
}

/// The EventBridge rule of a Schedule.
pub fn rule_name(prefix: &str, namespace: &str, schedule: &str, schedule_uid: &str) -> String {
    fit_name(prefix, &[namespace, schedule], schedule_uid, RULE_NAME_MAX)
}

/// The execution of a Run: derived from the Run's UID alone, so a StartExecution retried after
/// a crash is rejected by Step Functions as a duplicate instead of starting a second execution.
/// The Run's name leads for readability; the UID (36 characters) always fits whole.
pub fn execution_name(run: &str, run_uid: &str) -> String {
    let uid = sanitize(run_uid);
    let room = EXECUTION_NAME_MAX - uid.len() - 1;
    let lead: String = sanitize(run).chars().take(room).collect();
    format!("{}-{uid}", lead.trim_end_matches(['-', '_']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2b9e-8d7a-4c55-9e1f-0a2b3c4d5e6f";

    #[test]
    fn short_names_are_readable_and_stable() {
        let name = state_machine_name("flowline-", "team-a", "train", UID);
        assert_eq!(
            name,
            format!("flowline-team-a-train-{}", short_hash(UID, 8))
        );
        assert_eq!(
            name,
            state_machine_name("flowline-", "team-a", "train", UID)
        );
    }

    #[test]
    fn another_uid_gives_another_name() {
        let other = "00000000-0000-0000-0000-000000000000";
        assert_ne!(
            state_machine_name("p-", "ns", "flow", UID),
            state_machine_name("p-", "ns", "flow", other)
        );
    }

    #[test]
    fn long_names_fit_every_limit_and_stay_distinct() {
        let long_ns = "n".repeat(63);
        let flow_a = format!("{}-a", "f".repeat(60));
        let flow_b = format!("{}-b", "f".repeat(60));
        for (max, make) in [
            (
                STATE_MACHINE_NAME_MAX,
                state_machine_name as fn(&str, &str, &str, &str) -> String,
            ),
            (RULE_NAME_MAX, rule_name),
        ] {
            let a = make("flowline-", &long_ns, &flow_a, UID);
            let b = make("flowline-", &long_ns, &flow_b, UID);
            assert!(a.len() <= max, "{a} is {} > {max}", a.len());
            assert_ne!(a, b);
        }
        let job = job_definition_name("flowline-", &long_ns, &flow_a, &"s".repeat(80), UID);
        assert!(job.len() <= JOB_DEFINITION_NAME_MAX);
    }

    #[test]
    fn names_use_only_allowed_characters() {
        let name = state_machine_name("flowline-", "ns", "my.flow", UID);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(name.contains("my-flow"));
    }

    #[test]
    fn execution_name_keeps_the_whole_uid() {
        let name = execution_name(&"r".repeat(100), UID);
        assert!(name.len() <= EXECUTION_NAME_MAX);
        assert!(name.ends_with(UID));
        assert_eq!(execution_name("nightly", UID), format!("nightly-{UID}"));
    }
}
