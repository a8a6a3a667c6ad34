//! Throughput of `flowline task`'s uploads and downloads against the local emulator: 100 files
//! of 1 MiB and one file of 256 MiB (`FLOWLINE_BENCH_BIG_MIB` to change it), each with 1, 8 and
//! 64 transfers at once (`FLOWLINE_S3_WORKER_COUNT`). A benchmark, not a test: it prints a
//! table and asserts nothing about time. Needs the local environment (`make env-up`, then
//! `source <env dir>/env.sh`, which exports `FLOWLINE_AWS_EXEC_ENDPOINT`); run with
//! `cargo bench --features e2e --bench task_transfer` (add `--profile dev` to skip the release
//! build).
//!
//! Upload: the wrapped command hard-links the prepared files into `$FLOWLINE_OUTPUT_DIR`, so
//! the time is the wrapper's (start, uploads, `_task.json`). Download: a task whose only input
//! is that prefix runs `true`, so the time is the listing and the downloads into
//! `$FLOWLINE_INPUT_DIR`. Each case runs once, wall clock of the whole `flowline task` process.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const WORKERS: [usize; 3] = [1, 8, 64];
const ROOT: &str = "s3://flowline/bench-transfer";

/// Bytes that no layer could compress or deduplicate (xorshift).
fn write_file(path: &Path, size: usize, mut seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("file created"));
    let mut block = vec![0u8; MIB];
    for _ in 0..size / MIB {
        for chunk in block.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes());
        }
        file.write_all(&block).expect("written");
    }
    file.flush().expect("flushed");
}

struct Case {
    name: &'static str,
    folder: PathBuf,
    files: usize,
    bytes: usize,
}

fn flowline(env: &[(&str, String)], command: &[&str]) -> Duration {
    let mut process = Command::new(env!("CARGO_BIN_EXE_flowline"));
    process
        .arg("task")
        .arg("--")
        .args(command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        process.env(name, value);
    }
    let start = Instant::now();
    let output = process.output().expect("flowline task starts");
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "flowline task {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn main() {
    let Ok(endpoint) = std::env::var("FLOWLINE_AWS_EXEC_ENDPOINT") else {
        panic!("FLOWLINE_AWS_EXEC_ENDPOINT is unset: start the environment and source its env.sh");
    };
    let big_mib: usize = std::env::var("FLOWLINE_BENCH_BIG_MIB")
        .ok()
        .map(|v| {
            v.parse()
                .expect("FLOWLINE_BENCH_BIG_MIB is a number of MiB")
        })
        .unwrap_or(256);
    // Prepared files and the wrapper's folders on one file system, so hard links work.
    let scratch =
        std::env::temp_dir().join(format!("flowline-bench-transfer-{}", std::process::id()));
    let many = scratch.join("many");
    let big = scratch.join("big");
    std::fs::create_dir_all(&many).expect("scratch folder");
    std::fs::create_dir_all(&big).expect("scratch folder");
    for index in 0..100 {
        write_file(&many.join(format!("part-{index:03}.bin")), MIB, index + 1);
    }
    write_file(&big.join("big.bin"), big_mib * MIB, 7);
    let cases = [
        Case {
            name: "many",
            folder: many,
            files: 100,
            bytes: 100 * MIB,
        },
        Case {
            name: "big",
            folder: big,
            files: 1,
            bytes: big_mib * MIB,
        },
    ];

    let run = format!("run-{}", std::process::id());
    let base = [
        ("FLOWLINE_FLOW", "bench".to_owned()),
        ("FLOWLINE_NAMESPACE", "bench".to_owned()),
        ("FLOWLINE_RUN_ID", run.clone()),
        ("FLOWLINE_DATASTORE_ROOT", ROOT.to_owned()),
        ("FLOWLINE_S3_ENDPOINT", endpoint),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("TMPDIR", scratch.display().to_string()),
    ];
    println!("| data | workers | upload | download |");
    println!("|---|---|---|---|");
    for case in &cases {
        for workers in WORKERS {
            // One prefix per case, overwritten at each worker count: the emulator keeps
            // objects in memory.
            let prefix = format!("{ROOT}/{run}/{}/0/", case.name);
            let mut upload = base.to_vec();
            upload.extend([
                ("FLOWLINE_STEP", case.name.to_owned()),
                ("FLOWLINE_TASK_ID", "0".to_owned()),
                ("FLOWLINE_ARTIFACT_URI", prefix.clone()),
                ("FLOWLINE_S3_WORKER_COUNT", workers.to_string()),
                ("SOURCE", case.folder.display().to_string()),
            ]);
            let up = flowline(
                &upload,
                &["sh", "-c", "cp -al \"$SOURCE\"/. \"$FLOWLINE_OUTPUT_DIR\"/"],
            );
            let mut download = base.to_vec();
            download.extend([
                ("FLOWLINE_STEP", "reader".to_owned()),
                ("FLOWLINE_TASK_ID", "0".to_owned()),
                ("FLOWLINE_INPUT_URIS", prefix),
                ("FLOWLINE_INPUT_STEPS", "*".to_owned()),
                ("FLOWLINE_S3_WORKER_COUNT", workers.to_string()),
            ]);
            let down = flowline(&download, &["true"]);
            let rate = |elapsed: Duration| {
                format!(
                    "{:.1} s, {:.0} MiB/s",
                    elapsed.as_secs_f64(),
                    case.bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
                )
            };
            println!(
                "| {} × {} MiB | {workers} | {} | {} |",
                case.files,
                case.bytes / case.files / MIB,
                rate(up),
                rate(down)
            );
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
}
