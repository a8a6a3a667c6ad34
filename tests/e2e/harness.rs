//! Shared plumbing of the end-to-end tests: the environment started by `hack/env-up.sh`
//! (a real kube-apiserver and the AWS emulator), kubectl, per-test namespaces, waiting on
//! conditions, and a dump of what a failed test touched.
#![allow(dead_code)] // Not every test module uses every helper.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the environment lives, read from the variables `env.sh` exports.
pub struct Env {
    pub env_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub unprivileged_kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub aws_endpoint: String,
    /// The second emulator, which runs each Batch job's command as a local process with only
    /// what a container would get (`--exec-jobs`): for tests of what a task receives.
    pub aws_exec_endpoint: String,
}

/// The environment; panics with how to start it when it is missing, so a test never passes
/// without having run against the real components.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: the e2e tests need the local environment. \
                     Run `make test`, or `eval \"$(hack/env-up.sh)\"` before `cargo test --features e2e`."
                )
            })
        };
        Env {
            env_dir: PathBuf::from(var("FLOWLINE_ENV_DIR")),
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            unprivileged_kubeconfig: PathBuf::from(var("FLOWLINE_UNPRIVILEGED_KUBECONFIG")),
            bin_dir: PathBuf::from(var("FLOWLINE_BIN_DIR")),
            aws_endpoint: var("FLOWLINE_AWS_ENDPOINT"),
            aws_exec_endpoint: var("FLOWLINE_AWS_EXEC_ENDPOINT"),
        }
    })
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What one kubectl invocation printed.
#[derive(Debug)]
pub struct Kubectl {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// stdout, or a panic that shows the failed command's stderr.
    pub fn ok(self) -> String {
        assert!(self.success, "kubectl failed: {}", self.stderr);
        self.stdout
    }
}

/// Runs kubectl as the cluster admin.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Kubectl {
    kubectl_with(&env().kubeconfig, args, stdin)
}

/// Runs kubectl with the given kubeconfig (e.g. the unprivileged user's).
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Kubectl {
    let mut child = Command::new(env().bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .expect("kubectl reads stdin");
    }
    let output = child.wait_with_output().expect("kubectl finishes");
    Kubectl {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A unique, DNS-safe name: `<prefix>-<pid>-<counter><time>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}{:x}", std::process::id(), nanos % 0xfff)
}

/// A namespace of one test's own. Dropped: deleted (not awaited); dropped while the test
/// panics: its objects and events, and the tail of the environment's logs, are printed first.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn create(prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        kubectl(&["create", "namespace", &name], None).ok();
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_namespace(&self.name);
        }
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// Prints what a failed test left in its namespace, and the last lines of every log.
pub fn dump_namespace(namespace: &str) {
    let kinds = if crds_present() {
        "all,configmaps,events,flows,runs,schedules"
    } else {
        "all,configmaps,events"
    };
    let objects = kubectl(&["get", kinds, "-n", namespace, "-o", "yaml"], None);
    eprintln!(
        "==== objects in namespace {namespace}\n{}{}",
        objects.stdout, objects.stderr
    );
    dump_logs();
}

/// Prints the last 30 lines of each log in the environment's `logs/` folder, each cut to 400
/// characters (the control plane logs whole objects on one line).
pub fn dump_logs() {
    let Ok(entries) = std::fs::read_dir(env().env_dir.join("logs")) else {
        return;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        eprintln!(
            "==== {} (last {} lines)",
            entry.path().display(),
            tail.len()
        );
        for line in tail {
            let cut: String = line.chars().take(400).collect();
            eprintln!("{cut}");
        }
    }
}

fn crds_present() -> bool {
    kubectl(&["get", "crd", "flows.flowline.io"], None).success
}

/// Applies `crds/` to the cluster once per test process and waits until they are Established.
pub fn install_crds() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = repo_root().join("crds");
        let dir = dir.to_str().expect("utf-8 path");
        kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", dir],
            None,
        )
        .ok();
        kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                dir,
            ],
            None,
        )
        .ok();
    });
}

/// Polls `check` until it returns `Some`, with a short growing interval; panics naming
/// `what` after `timeout`. Tests wait on conditions this way instead of sleeping.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// The async form of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// AWS SDK configuration pointing at the emulator, with its test credentials.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config_for(&env().aws_endpoint).await
}

/// AWS SDK configuration pointing at the emulator that runs jobs as processes.
pub async fn aws_exec_config() -> aws_config::SdkConfig {
    aws_config_for(&env().aws_exec_endpoint).await
}

async fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "flowline-e2e",
        ))
        .load()
        .await
}

/// Writes an object to the emulator's S3 (path-style addressing, as the emulator needs).
pub async fn put_s3_object(bucket: &str, key: &str, body: &[u8]) {
    let config = aws_config().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
    .put_object()
    .bucket(bucket)
    .key(key)
    .body(body.to_vec().into())
    .send()
    .await
    .unwrap_or_else(|error| panic!("s3://{bucket}/{key} is written: {error:?}"));
}

/// The role tasks run as on the exec emulator (created by `hack/moto/seed.py`).
pub const EXEC_JOB_ROLE: &str = "arn:aws:iam::123456789012:role/flowline-job";
/// The role Batch reads secrets and pulls images with on the exec emulator.
pub const EXEC_EXECUTION_ROLE: &str = "arn:aws:iam::123456789012:role/flowline-execution";

/// A `flowline controller` process watching one namespace, with an AWS access key of its own
/// so the emulator's request counts can be read for it alone. Killed when dropped; its log is
/// in the environment's `logs/` folder, which failure dumps print. It serves `/metrics` and
/// the health endpoints on a free loopback port, and runs without leader election unless the
/// test turns it on (`FLOWLINE_LEADER_ELECTION=true` with a Lease of the test's own).
pub struct ControllerProcess {
    child: std::process::Child,
    pub access_key: String,
    pub log: PathBuf,
    pub http_port: u16,
    namespace: String,
    kubeconfig: PathBuf,
    extra_env: Vec<(String, String)>,
    /// The emulator it calls, and the secret of its access key.
    endpoint: String,
    secret_key: String,
}

impl ControllerProcess {
    pub fn start(namespace: &str) -> ControllerProcess {
        Self::start_with(namespace, &[])
    }

    /// Starts a controller with extra environment (e.g. a short drift interval).
    pub fn start_with(namespace: &str, extra_env: &[(&str, &str)]) -> ControllerProcess {
        Self::start_full(namespace, "", &env().kubeconfig, extra_env)
    }

    /// Starts one of several controllers watching the same namespace; `replica` tells their
    /// access keys and logs apart.
    pub fn start_replica(
        namespace: &str,
        replica: &str,
        extra_env: &[(&str, &str)],
    ) -> ControllerProcess {
        Self::start_full(namespace, replica, &env().kubeconfig, extra_env)
    }

    /// Starts a controller against the emulator that runs each job's command (see
    /// [`Env::aws_exec_endpoint`]), configured as a platform team would: the job role tasks
    /// get credentials of, the execution role Batch reads secrets with, and the S3 endpoint.
    pub fn start_exec(namespace: &str, extra_env: &[(&str, &str)]) -> ControllerProcess {
        let endpoint = env().aws_exec_endpoint.as_str();
        let mut all = vec![
            ("FLOWLINE_S3_ENDPOINT", endpoint),
            ("FLOWLINE_JOB_ROLE", EXEC_JOB_ROLE),
            ("FLOWLINE_EXECUTION_ROLE", EXEC_EXECUTION_ROLE),
        ];
        all.extend_from_slice(extra_env);
        // Its own access key, so `aws_requests` counts its calls on the exec emulator.
        let access_key = format!("CTL{}", namespace.replace('-', "").to_uppercase());
        Self::start_against(namespace, endpoint, &access_key, "testing", &all)
    }

    /// Starts a controller that talks to the API server with `kubeconfig` (e.g. a
    /// ServiceAccount's token) instead of the cluster admin's.
    pub fn start_as(
        namespace: &str,
        kubeconfig: &Path,
        extra_env: &[(&str, &str)],
    ) -> ControllerProcess {
        Self::start_full(namespace, "", kubeconfig, extra_env)
    }

    /// Starts a controller against another emulator (e.g. one that enforces IAM) with the
    /// access key of an IAM user of its own.
    pub fn start_against(
        namespace: &str,
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        extra_env: &[(&str, &str)],
    ) -> ControllerProcess {
        Self::spawn(
            namespace,
            "",
            &env().kubeconfig,
            (endpoint, access_key, secret_key),
            extra_env,
        )
    }

    fn start_full(
        namespace: &str,
        replica: &str,
        kubeconfig: &Path,
        extra_env: &[(&str, &str)],
    ) -> ControllerProcess {
        let access_key = format!(
            "CTL{}{}",
            namespace.replace('-', "").to_uppercase(),
            replica.to_uppercase()
        );
        Self::spawn(
            namespace,
            replica,
            kubeconfig,
            (&env().aws_endpoint, &access_key, "testing"),
            extra_env,
        )
    }

    /// `aws`: the emulator's endpoint, and the access key id and secret to sign with.
    fn spawn(
        namespace: &str,
        replica: &str,
        kubeconfig: &Path,
        aws: (&str, &str, &str),
        extra_env: &[(&str, &str)],
    ) -> ControllerProcess {
        let (endpoint, access_key, secret_key) = aws;
        let suffix = if replica.is_empty() {
            String::new()
        } else {
            format!("-{replica}")
        };
        let log = env()
            .env_dir
            .join("logs")
            .join(format!("controller-{namespace}{suffix}.log"));
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let http_port = free_port();
        let child = spawn_controller(
            namespace,
            kubeconfig,
            (endpoint, access_key, secret_key),
            &log,
            http_port,
            &extra_env,
        );
        ControllerProcess {
            child,
            access_key: access_key.to_owned(),
            log,
            http_port,
            namespace: namespace.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            extra_env,
            endpoint: endpoint.to_owned(),
            secret_key: secret_key.to_owned(),
        }
    }

    /// The process id (part of its leader identity, `hostname-pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL: no graceful shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process at once (SIGKILL: no graceful shutdown) and starts it again.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.child = spawn_controller(
            &self.namespace,
            &self.kubeconfig,
            (&self.endpoint, &self.access_key, &self.secret_key),
            &self.log,
            self.http_port,
            &self.extra_env,
        );
    }

    /// Starts the process again (after it exited or was killed) with other extra environment.
    pub fn restart_with(&mut self, extra_env: &[(&str, &str)]) {
        self.kill();
        self.extra_env = extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.child = spawn_controller(
            &self.namespace,
            &self.kubeconfig,
            (&self.endpoint, &self.access_key, &self.secret_key),
            &self.log,
            self.http_port,
            &self.extra_env,
        );
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Waits until the process exits, returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("the controller to exit", timeout, || {
            self.child.try_wait().expect("process state")
        })
    }

    /// `(HTTP status, body)` of a path on the controller's endpoint; `None` while it does not
    /// answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let output = Command::new("curl")
            .args(["-s", "-m", "5", "-w", "\n%{http_code}", &url])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok()?;
        (code != 0).then(|| (code, body.to_owned()))
    }

    /// Requests this controller made to the emulator, by `service:Operation`.
    pub fn aws_requests(&self) -> std::collections::BTreeMap<String, u64> {
        emulator_requests_at(&self.endpoint, &self.access_key)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port no one listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn spawn_controller(
    namespace: &str,
    kubeconfig: &Path,
    aws: (&str, &str, &str),
    log: &Path,
    http_port: u16,
    extra_env: &[(String, String)],
) -> std::process::Child {
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("controller log opens");
    let errors = output.try_clone().expect("log handle clones");
    let (endpoint, access_key, secret_key) = aws;
    Command::new(env!("CARGO_BIN_EXE_flowline"))
        .arg("controller")
        .env("KUBECONFIG", kubeconfig)
        .env("FLOWLINE_WATCH_NAMESPACE", namespace)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .env("AWS_REGION", "us-east-1")
        .env("FLOWLINE_S3_FORCE_PATH_STYLE", "true")
        .env("FLOWLINE_LEADER_ELECTION", "false")
        .env("FLOWLINE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("RUST_LOG", "info,flowline=debug")
        // Test controllers share one emulator and the default name prefix, so managed execution
        // events would give them one shared queue: each would consume (and drop) the others'
        // events, and count SQS calls among its own requests. Polling only, then, unless a test
        // of the events path turns them on with a name prefix of its own.
        .env("FLOWLINE_EXECUTION_EVENTS", "off")
        .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .expect("the flowline controller starts")
}

/// The emulator's request counts for one access key, by `service:Operation`.
pub fn emulator_requests(access_key: &str) -> std::collections::BTreeMap<String, u64> {
    emulator_requests_at(&env().aws_endpoint, access_key)
}

/// The request counts of the emulator at `endpoint` for one access key.
pub fn emulator_requests_at(
    endpoint: &str,
    access_key: &str,
) -> std::collections::BTreeMap<String, u64> {
    let url = format!("{endpoint}/flowline-test/requests");
    let output = Command::new("curl")
        .args(["-sf", &url])
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "the emulator answers {url}");
    let counts: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("counts are JSON");
    counts["byAccessKey"][access_key]
        .as_object()
        .map(|ops| {
            ops.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// AWS operations that change something (everything but Describe/List/Get reads).
pub fn writes(
    counts: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|(operation, _)| {
            let op = operation.rsplit(':').next().unwrap_or(operation);
            !(op.starts_with("Describe")
                || op.starts_with("List")
                || op.starts_with("Get")
                || op.starts_with("Head"))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// A JSON path of an object, read with kubectl (`""` when absent).
pub fn jsonpath(namespace: &str, resource: &str, path: &str) -> String {
    let result = kubectl(
        &[
            "get",
            resource,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    );
    if result.success {
        result.stdout
    } else {
        String::new()
    }
}

/// The status, reason and message of a condition of an object.
pub fn condition(namespace: &str, resource: &str, type_: &str) -> (String, String, String) {
    let path = format!(
        "{{.status.conditions[?(@.type==\"{type_}\")].status}}|{{.status.conditions[?(@.type==\"{type_}\")].reason}}|{{.status.conditions[?(@.type==\"{type_}\")].message}}"
    );
    let text = jsonpath(namespace, resource, &path);
    let mut parts = text.splitn(3, '|').map(str::to_owned);
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

/// Waits (up to two minutes) until a Step Functions execution leaves RUNNING and returns its
/// final description.
pub async fn finished_execution(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
    wait_for_async(
        "the execution to finish",
        Duration::from_secs(120),
        || async {
            let description = sfn
                .describe_execution()
                .execution_arn(execution_arn)
                .send()
                .await
                .expect("execution is described");
            (description.status() != &aws_sdk_sfn::types::ExecutionStatus::Running)
                .then_some(description)
        },
    )
    .await
}

/// An emulator of the suite's own that enforces IAM like AWS (`--enforce-iam`) and runs each
/// Batch job's command as a local process (`--exec-jobs`). Started once per test process by
/// [`iam_emulator`]; a watchdog in its process group stops it when the test process is gone,
/// and its pid file under `$FLOWLINE_ENV_DIR/pids/` lets `hack/env-down.sh` stop it too.
pub struct IamEmulator {
    pub endpoint: String,
    /// Where each job's output goes, as `<logStreamName>.log`.
    pub job_log_dir: PathBuf,
    pub log: PathBuf,
}

/// The IAM-enforcing emulator, started on first use (see [`IamEmulator`]).
pub fn iam_emulator() -> &'static IamEmulator {
    static EMULATOR: OnceLock<IamEmulator> = OnceLock::new();
    EMULATOR.get_or_init(start_iam_emulator)
}

fn start_iam_emulator() -> IamEmulator {
    use std::os::unix::process::CommandExt;

    let python = std::env::var("FLOWLINE_MOTO_PYTHON")
        .expect("FLOWLINE_MOTO_PYTHON is set by env.sh (hack/env-up.sh)");
    let owner = std::process::id();
    let name = format!("moto-iam-{owner}");
    let home = env().env_dir.join(&name);
    let job_log_dir = home.join("job-logs");
    std::fs::create_dir_all(&job_log_dir).expect("job log folder is created");
    let log = env().env_dir.join("logs").join(format!("{name}.log"));
    let pid_file = env().env_dir.join("pids").join(format!("{name}.pid"));
    let output = std::fs::File::create(&log).expect("emulator log opens");
    let errors = output.try_clone().expect("log handle clones");
    // The shell leads the process group: it runs the emulator, waits while both the test
    // process and the emulator live, then removes the pid file and stops the whole group.
    let watchdog = r#"owner=$1 pid_file=$2; shift 2
"$@" &
while kill -0 "$owner" 2>/dev/null && kill -0 $! 2>/dev/null; do sleep 1; done
rm -f "$pid_file"
kill -TERM 0"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .arg("sh")
        .arg(owner.to_string())
        .arg(&pid_file)
        // Nothing of the test's environment: as hack/env-up.sh starts its emulators.
        .args([
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg(&python)
        .arg(repo_root().join("hack/moto/launcher.py"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--enforce-iam", "--exec-jobs"])
        .arg("--runtimes")
        .arg(env().env_dir.join("runtimes.txt"))
        .arg("--job-log-dir")
        .arg(&job_log_dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .expect("the IAM-enforcing emulator starts");
    std::fs::write(&pid_file, child.id().to_string()).expect("pid file is written");
    let endpoint = wait_for(
        "the IAM-enforcing emulator to be ready",
        Duration::from_secs(120),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|line| line.strip_prefix("moto ready on "))
            {
                return Some(url.trim().to_owned());
            }
            let exited = child.try_wait().expect("process state");
            assert!(
                exited.is_none(),
                "the IAM-enforcing emulator exited ({exited:?}):\n{text}"
            );
            None
        },
    );
    IamEmulator {
        endpoint,
        job_log_dir,
        log,
    }
}

/// The lines every task of a step printed, read from an exec-mode emulator's job logs in
/// `log_dir` (the files behind the CloudWatch streams the Run's status names).
pub fn task_output(namespace: &str, run: &str, step: &str, log_dir: &Path) -> Vec<String> {
    let streams = jsonpath(
        namespace,
        &format!("run/{run}"),
        &format!("{{range .status.steps[?(@.name==\"{step}\")].logStreams[*]}}{{@}} {{end}}"),
    );
    let dir = log_dir;
    let mut files = Vec::new();
    for stream in streams.split_whitespace() {
        // A multi-node step names its main node's stream; the emulator writes each node's
        // output beside it (`<job>-node-<i>`).
        match stream.rsplit_once("-node-") {
            Some((job, _)) => {
                let path = dir.join(format!("{job}-node-"));
                let (folder, stem) = (path.parent().expect("a folder"), path.file_name());
                let stem = stem.and_then(|s| s.to_str()).expect("a file name");
                let mut nodes: Vec<_> = std::fs::read_dir(folder)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|entry| entry.path())
                            .filter(|p| {
                                p.file_name()
                                    .and_then(|n| n.to_str())
                                    .is_some_and(|n| n.starts_with(stem))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                nodes.sort();
                files.extend(nodes);
            }
            None => files.push(dir.join(format!("{stream}.log"))),
        }
    }
    files
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The value a task printed on a line `<tag> <value>` (the first such line).
pub fn tagged<'a>(lines: &'a [String], tag: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(&format!("{tag} ")))
}

/// A job queue on the emulator's `flowline` compute environment (an error, e.g. that it
/// exists already, is ignored).
pub async fn create_job_queue(config: &aws_config::SdkConfig, queue: &str) {
    let _ = aws_sdk_batch::Client::new(config)
        .create_job_queue()
        .job_queue_name(queue)
        .state(aws_sdk_batch::types::JqState::Enabled)
        .priority(1)
        .compute_environment_order(
            aws_sdk_batch::types::ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment("flowline")
                .build(),
        )
        .send()
        .await;
}
