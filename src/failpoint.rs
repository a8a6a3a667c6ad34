//! Test-only fail points: places where the process can be made to exit at once, so the e2e
//! tests can interrupt a reconcile at an exact point (as a crash or an OOM kill would) and
//! check that the next reconcile recovers.
//!
//! Compiled in always and inert unless `FLOWLINE_FAILPOINT` names the point; never set it in
//! production. Points:
//! - `after-state-machine-update`: the Flow reconciler updated the state machine (published a
//!   version) and has not written the Flow's status yet.
//! - `after-execution-start`: the Run reconciler started the execution and has not written
//!   the Run's status yet.

use std::sync::OnceLock;

/// The variable that arms one fail point (test-only).
pub const ENV: &str = "FLOWLINE_FAILPOINT";

/// The exit code of a process stopped by a fail point.
pub const EXIT_CODE: i32 = 86;

pub const AFTER_STATE_MACHINE_UPDATE: &str = "after-state-machine-update";

pub const AFTER_EXECUTION_START: &str = "after-execution-start";

/// Exits the process when `point` is the armed fail point; does nothing otherwise.
pub fn hit(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(point) {
        eprintln!("{ENV}={point}: exiting with code {EXIT_CODE} (test-only fail point)");
        std::process::exit(EXIT_CODE);
    }
}
