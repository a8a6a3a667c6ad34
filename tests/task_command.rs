//! `flowline task` as a process, without AWS (no `FLOWLINE_ARTIFACT_URI`, so nothing is
//! stored): the command's output passes through untouched, its exit code is preserved (128 + n
//! after signal n), SIGTERM sent to the wrapper reaches the command, and the command gets fresh
//! input and output folders.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

fn task(script: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowline"));
    command
        .args(["task", "--", "sh", "-c", script])
        .env_remove("FLOWLINE_ARTIFACT_URI")
        .env_remove("FLOWLINE_INPUT_URIS")
        .env_remove("FLOWLINE_BINARY_SECRETS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn output_passes_through_and_the_exit_code_is_the_commands() {
    let output = task("printf 'line one\\nno newline'; exit 7")
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"line one\nno newline");
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn a_command_ended_by_a_signal_exits_128_plus_the_signal() {
    let output = task("kill -TERM $$").output().unwrap();
    assert_eq!(output.status.code(), Some(143));
}

#[test]
fn sigterm_to_the_wrapper_reaches_the_command() {
    let mut child =
        task("trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done")
            .spawn()
            .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(9));
}

#[test]
fn the_command_gets_fresh_input_and_output_folders_that_are_removed_after() {
    let output = task(
        "test -d \"$FLOWLINE_INPUT_DIR\" && test -d \"$FLOWLINE_OUTPUT_DIR\" && \
         test -z \"$(ls -A \"$FLOWLINE_OUTPUT_DIR\")\" && echo \"$FLOWLINE_OUTPUT_DIR\"",
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let dir = String::from_utf8(output.stdout).unwrap();
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} is removed"
    );
}

#[test]
fn a_command_that_cannot_start_exits_127_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["task", "--", "/nonexistent/command"])
        .env_remove("FLOWLINE_ARTIFACT_URI")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/command"), "{stderr}");
}
