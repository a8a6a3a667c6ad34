"""Chaos benchmark and soak of the Flowline controller (run by hack/chaos-bench.sh).

Bench: 50 Flows, 200 Runs and 10 Schedules (cron, rate, S3-triggered) while the fault proxy
(flowline-fault-proxy) injects 20 % then 50 % faults between the controller and the emulator,
the controller is SIGKILLed at random moments and restarted, and kube-apiserver is restarted
once. Then faults stop; it measures the time to converge, deletes everything and counts
duplicate executions, orphaned AWS resources and Runs in the wrong phase (all must be 0).

Soak (--soak MINUTES): one controller process, moderate faults, continuous Runs and schedule
firings; every minute it samples the controller's RSS and open fds and prints a table.

Needs the environment's env.sh sourced (KUBECONFIG, FLOWLINE_AWS_ENDPOINT) and the boto3 of the
emulator's virtualenv (FLOWLINE_MOTO_PYTHON). Prints tables; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    for attempt in range(30):
        proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
        if proc.returncode == 0 or not check:
            return proc.stdout
        # The API server may be restarting: retry briefly.
        time.sleep(1)
    raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")


def http(method: str, url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


class Proxy:
    def __init__(self, binary: str, upstream: str, log_path: Path):
        self.proc = subprocess.Popen(
            [binary, "--upstream", upstream, "--seed", "17"],
            stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True,
        )
        line = self.proc.stdout.readline()
        self.url = line.strip().split()[-1]

    def set(self, throttle: float, server_error: float, drop: float, latency: float, latency_ms: int = 300) -> None:
        rates = {"throttle": throttle, "serverError": server_error, "drop": drop, "latency": latency, "latencyMs": latency_ms}
        http("PUT", f"{self.url}/__faults", {"default": rates, "services": {}})

    def stats(self) -> dict:
        return http("GET", f"{self.url}/__stats")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Controller:
    """`flowline controller` as a child process, AWS endpoint = the proxy."""

    def __init__(self, binary: str, namespace: str, endpoint: str, log_path: Path, extra: dict[str, str]):
        self.args = [binary, "controller"]
        self.env = dict(os.environ)
        self.env.update({
            "FLOWLINE_WATCH_NAMESPACE": namespace,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "FLOWLINE_S3_FORCE_PATH_STYLE": "true",
            "FLOWLINE_LEADER_ELECTION": "false",
            "FLOWLINE_HTTP_ADDR": "off",
            "RUST_LOG": "warn",
            **extra,
        })
        self.log = open(log_path, "a")
        self.kills = 0
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def kill_and_restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        self.start()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def steps(fail: bool, hold_seconds: int = 0) -> list[dict]:
    work = {"name": "work", "command": ["true"], "next": ["end"]}
    env = []
    if fail:
        env.append({"name": "EMULATOR_FAIL", "value": "chaos-bench failure on purpose"})
    if hold_seconds:
        env.append({"name": "EMULATOR_RUN_SECONDS", "value": str(hold_seconds)})
    if env:
        work["env"] = env
    return [{"name": "start", "command": ["true"], "next": ["work"]}, work, {"name": "end", "command": ["true"]}]


def flow(name: str, fail: bool, hold: int = 0) -> dict:
    return {"apiVersion": "flowline.io/v1alpha1", "kind": "Flow", "metadata": {"name": name}, "spec": {"steps": steps(fail, hold)}}


def run(name: str, flow_name: str) -> dict:
    return {"apiVersion": "flowline.io/v1alpha1", "kind": "Run", "metadata": {"name": name}, "spec": {"flowRef": {"name": flow_name}}}


def schedule(name: str, flow_name: str, kind: str, bucket: str) -> dict:
    spec: dict = {"flowRef": {"name": flow_name}}
    if kind == "cron":
        spec["cron"] = "0 3 * * *"
    elif kind == "rate":
        spec["rate"] = "6 hours"
    else:
        spec["event"] = {"s3": {"bucket": bucket, "prefix": f"{name}/", "suffix": ".csv"}}
    return {"apiVersion": "flowline.io/v1alpha1", "kind": "Schedule", "metadata": {"name": name}, "spec": spec}


def apply(namespace: str, objs: list[dict]) -> None:
    for i in range(0, len(objs), 25):
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs[i:i + 25]})
        kubectl("apply", "-n", namespace, "-f", "-", stdin=doc)


def get(namespace: str, resource: str) -> list[dict]:
    out = kubectl("get", resource, "-n", namespace, "-o", "json", check=True)
    return json.loads(out)["items"]


def ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in obj.get("status", {}).get("conditions", []))


class Aws:
    """Direct clients of the emulator (not through the proxy): the bench's own checks."""

    def __init__(self, endpoint: str):
        cfg = Config(retries={"max_attempts": 10, "mode": "standard"}, s3={"addressing_style": "path"})
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "testing", "config": cfg}
        self.endpoint = endpoint
        self.sfn = boto3.client("stepfunctions", **kw)
        self.batch = boto3.client("batch", **kw)
        self.events = boto3.client("events", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.s3 = boto3.client("s3", **kw)

    def fire(self, rule: str) -> str:
        return http("POST", f"{self.endpoint}/flowline-test/fire-rule", {"name": rule})["eventId"]

    def refire(self, rule: str, event_id: str) -> None:
        http("POST", f"{self.endpoint}/flowline-test/fire-rule", {"name": rule, "eventId": event_id})

    def executions(self, machine_arn: str) -> list[dict]:
        out, token = [], None
        while True:
            kw = {"stateMachineArn": machine_arn, "maxResults": 1000}
            if token:
                kw["nextToken"] = token
            page = self.sfn.list_executions(**kw)
            out += page["executions"]
            token = page.get("nextToken")
            if not token:
                return out

    def leftovers(self, marker: str) -> dict[str, int]:
        machines = [m for p in self.sfn.get_paginator("list_state_machines").paginate() for m in p["stateMachines"] if marker in m["name"]]
        jobdefs = [d for p in self.batch.get_paginator("describe_job_definitions").paginate(status="ACTIVE") for d in p["jobDefinitions"] if marker in d["jobDefinitionName"]]
        rules = [r for p in self.events.get_paginator("list_rules").paginate() for r in p["Rules"] if marker in r["Name"]]
        queues = [q for q in self.sqs.list_queues().get("QueueUrls", []) if marker in q]
        return {"state machines": len(machines), "job definitions (ACTIVE)": len(jobdefs), "rules": len(rules), "queues": len(queues)}


def proxy_totals(stats: dict) -> dict[str, int]:
    total: dict[str, int] = {}
    for ops in stats.values():
        for counts in ops.values():
            for k, v in counts.items():
                total[k] = max(total.get(k, 0), v) if k == "maxAttempt" else total.get(k, 0) + v
    return total


def print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in [h, *[r[i] for r in rows]]) for i, h in enumerate(headers)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |")
    sys.stdout.flush()


def setup(args) -> tuple[str, Aws, Proxy, Path]:
    namespace = f"chaos-{os.getpid()}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    kubectl("create", "namespace", namespace)
    aws = Aws(os.environ["FLOWLINE_AWS_ENDPOINT"])
    proxy = Proxy(args.proxy_bin, aws.endpoint, out / "proxy.log")
    log(f"namespace {namespace}, proxy {proxy.url}, logs in {out}")
    return namespace, aws, proxy, out


def make_bucket(aws: Aws, bucket: str) -> None:
    aws.s3.create_bucket(Bucket=bucket)
    aws.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})


def wait_schedules_ready(namespace: str, names: list[str], timeout: float) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        scheds = {s["metadata"]["name"]: s for s in get(namespace, "schedules")}
        if all(n in scheds and ready(scheds[n]) and scheds[n].get("status", {}).get("ruleArn") for n in names):
            return {n: scheds[n]["status"]["ruleArn"].rsplit("/", 1)[-1] for n in names}
        time.sleep(2)
    raise RuntimeError("schedules did not become Ready")


def soak(args) -> None:
    namespace, aws, proxy, out = setup(args)
    proxy.set(throttle=0.02, server_error=0.02, drop=0.01, latency=0.02)
    controller = Controller(args.flowline_bin, namespace, proxy.url, out / "controller.log", {})
    bucket = f"chaos-soak-{os.getpid()}"
    make_bucket(aws, bucket)
    apply(namespace, [flow("ok", False), flow("bad", True), flow("sched", False)])
    apply(namespace, [schedule("cron", "sched", "cron", bucket), schedule("rate", "sched", "rate", bucket), schedule("upload", "sched", "s3", bucket)])
    rules = wait_schedules_ready(namespace, ["cron", "rate"], 300)
    pid = controller.proc.pid
    start = time.time()
    end = start + args.soak * 60
    created = fired = 0
    rows = []
    next_sample = start
    i = 0
    while time.time() < end:
        now = time.time()
        # ~12 Runs a minute, one in four failing on purpose.
        for _ in range(2):
            apply(namespace, [run(f"r-{i}", "bad" if i % 4 == 3 else "ok")])
            i += 1
            created += 1
        if now >= next_sample:
            for rule in rules.values():
                aws.fire(rule)
                fired += 1
            aws.s3.put_object(Bucket=bucket, Key=f"upload/{int(now)}.csv", Body=b"a\n")
            fired += 1
            # Finished Runs are removed so the population stays flat: a leak shows as growth.
            runs = get(namespace, "runs")
            phases: dict[str, int] = {}
            for r in runs:
                p = r.get("status", {}).get("phase", "-")
                phases[p] = phases.get(p, 0) + 1
            done = [r["metadata"]["name"] for r in runs if r.get("status", {}).get("phase") in ("Succeeded", "Failed")]
            if done:
                kubectl("delete", "runs", "-n", namespace, "--wait=false", *done, check=False)
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            totals = proxy_totals(proxy.stats())
            retries = totals.get("attempts", 0) / max(totals.get("invocations", 1), 1)
            rows.append([f"{(now - start) / 60:.0f}", f"{rss / 1024:.1f}", fds, created, fired, len(runs), phases.get("Succeeded", 0), phases.get("Failed", 0), totals.get("requests", 0), totals.get("throttle", 0) + totals.get("serverError", 0) + totals.get("drop", 0), f"{retries:.2f}"])
            log("sample " + " ".join(map(str, rows[-1])))
            next_sample += 60
        time.sleep(10)
    assert controller.proc.poll() is None, "the controller exited during the soak"
    print()
    print(f"Soak: {args.soak} min, one controller process (pid {pid}), faults 2% throttle + 2% 5xx + 1% drop + 2% latency")
    print_table(["min", "RSS MiB", "fds", "Runs created", "firings", "Runs listed", "Succeeded", "Failed", "AWS requests", "faults", "attempts/call"], rows)
    leftovers = teardown(namespace, aws, controller, proxy)
    print_table(["after deleting everything", "count (must be 0)"], [[f"orphaned {k}", v] for k, v in leftovers.items()])


def teardown(namespace: str, aws: Aws, controller: Controller, proxy: Proxy) -> dict[str, int]:
    proxy.set(0, 0, 0, 0)
    for kind in ("runs", "schedules", "flows"):
        kubectl("delete", kind, "--all", "-n", namespace, "--wait=false", check=False)
    deadline = time.time() + 600
    while time.time() < deadline:
        left = sum(len(get(namespace, k)) for k in ("runs", "schedules", "flows"))
        if left == 0:
            break
        time.sleep(3)
    time.sleep(5)
    leftovers = aws.leftovers(f"-{namespace}-")
    controller.stop()
    proxy.stop()
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return leftovers


def bench(args) -> None:
    namespace, aws, proxy, out = setup(args)
    rng = random.Random(42)
    # 20 % faults: throttles, 5xx, dropped connections and latency mixed.
    phases = [(0.20, dict(throttle=0.08, server_error=0.06, drop=0.03, latency=0.03)), (0.50, dict(throttle=0.20, server_error=0.15, drop=0.05, latency=0.10))]
    proxy.set(**phases[0][1])
    controller = Controller(args.flowline_bin, namespace, proxy.url, out / "controller.log", {"FLOWLINE_KEEP_SUCCEEDED_RUNS": "1000"})
    bucket = f"chaos-bench-{os.getpid()}"
    make_bucket(aws, bucket)
    t0 = time.time()
    # Every fifth Flow fails its middle step on purpose: its Runs must end Failed.
    flows = [flow(f"f-{i}", i % 5 == 4, hold=2) for i in range(50)]
    kinds = ["cron"] * 4 + ["rate"] * 3 + ["s3"] * 3
    schedules = [schedule(f"s-{j}-{k}", f"f-{j}", k, bucket) for j, k in enumerate(kinds)]
    apply(namespace, flows)
    apply(namespace, schedules)
    kill_log = []
    next_kill = time.time() + rng.uniform(2, 6)

    def chaos_tick() -> None:
        nonlocal next_kill
        if time.time() >= next_kill:
            controller.kill_and_restart()
            kill_log.append(round(time.time() - t0, 1))
            next_kill = time.time() + rng.uniform(2, 8)

    runs = [run(f"run-{i}", f"f-{i % 50}") for i in range(200)]
    for i in range(0, 200, 20):
        apply(namespace, runs[i:i + 20])
        chaos_tick()
        time.sleep(1)
    # Firings: two per schedule (cron and rate through the emulator's fire-rule, S3 by objects),
    # and each rule's first firing delivered twice (EventBridge delivers at least once).
    names = [s["metadata"]["name"] for s in schedules]
    deadline = time.time() + 600
    rules: dict[str, str] = {}
    while time.time() < deadline and len(rules) < 7:
        chaos_tick()
        for s in get(namespace, "schedules"):
            arn = s.get("status", {}).get("ruleArn")
            if arn and s["spec"].get("event") is None and ready(s):
                rules[s["metadata"]["name"]] = arn.rsplit("/", 1)[-1]
        time.sleep(1)
    s3_ready: set[str] = set()
    while time.time() < deadline and len(s3_ready) < 3:
        chaos_tick()
        s3_ready = {s["metadata"]["name"] for s in get(namespace, "schedules") if s["spec"].get("event") and ready(s)}
        time.sleep(1)
    firings: dict[str, int] = {n: 0 for n in names}
    for n, rule in rules.items():
        event = aws.fire(rule)
        aws.refire(rule, event)
        chaos_tick()
        aws.fire(rule)
        firings[n] = 2
    for n in names:
        if n in s3_ready:
            for k in range(2):
                aws.s3.put_object(Bucket=bucket, Key=f"{n}/obj-{k}.csv", Body=b"a\n")
            aws.s3.put_object(Bucket=bucket, Key=f"{n}/ignored.txt", Body=b"x")
            http("POST", f"{aws.endpoint}/flowline-test/redeliver-s3-event", {"key": f"{n}/obj-0.csv"})
            firings[n] = 2
    phase1_end = time.time() + 30
    while time.time() < phase1_end:
        chaos_tick()
        time.sleep(0.5)
    log("faults 50%")
    proxy.set(**phases[1][1])
    api_restart_at = time.time() + 20
    api_restarted = None
    phase2_end = time.time() + 60
    while time.time() < phase2_end:
        chaos_tick()
        if api_restarted is None and time.time() >= api_restart_at:
            log("restarting kube-apiserver")
            subprocess.run([str(ROOT / "hack/env-restart.sh"), "kube-apiserver"], check=True)
            api_restarted = round(time.time() - t0, 1)
        time.sleep(0.5)
    proxy.set(0, 0, 0, 0)
    faults_off = time.time()
    during = proxy_totals(proxy.stats())
    log("faults off; waiting for convergence")
    expected_runs = 200 + sum(firings.values())
    failing_flows = {f"f-{i}" for i in range(50) if i % 5 == 4}
    converged = None
    while time.time() < faults_off + 900:
        all_runs = get(namespace, "runs")
        fl = get(namespace, "flows")
        finished = [r for r in all_runs if r.get("status", {}).get("phase") in ("Succeeded", "Failed")]
        if len(all_runs) >= expected_runs and len(finished) == len(all_runs) and all(ready(f) for f in fl):
            converged = time.time() - faults_off
            break
        time.sleep(2)
    all_runs = get(namespace, "runs")
    wrong = []
    for r in all_runs:
        want = "Failed" if r["spec"]["flowRef"]["name"] in failing_flows else "Succeeded"
        if r.get("status", {}).get("phase") != want:
            wrong.append((r["metadata"]["name"], r.get("status", {}).get("phase")))
    # Executions per Flow against Runs per Flow: one execution per Run, one per firing.
    fl = {f["metadata"]["name"]: f for f in get(namespace, "flows")}
    dup = missing = executions = 0
    for name, f in fl.items():
        arn = f.get("status", {}).get("stateMachineArn")
        if not arn:
            continue
        ex = aws.executions(arn)
        executions += len(ex)
        want = sum(1 for r in runs if r["spec"]["flowRef"]["name"] == name)
        want += sum(firings[s["metadata"]["name"]] for s in schedules if s["spec"]["flowRef"]["name"] == name)
        dup += max(0, len(ex) - want)
        missing += max(0, want - len(ex))
    sched_runs: dict[str, int] = {}
    for r in all_runs:
        s = r["metadata"].get("labels", {}).get("flowline.io/schedule")
        if s:
            sched_runs[s] = sched_runs.get(s, 0) + 1
    sched_dup = sum(max(0, sched_runs.get(n, 0) - firings[n]) for n in names)
    sched_missing = sum(max(0, firings[n] - sched_runs.get(n, 0)) for n in names)
    stats = proxy.stats()
    totals = proxy_totals(stats)
    # The same count before deletion shows that the check finds this namespace's resources.
    before = aws.leftovers(f"-{namespace}-")
    leftovers = teardown(namespace, aws, controller, proxy)
    (out / "proxy-stats.json").write_text(json.dumps(stats, indent=1))

    print()
    print("Chaos benchmark: 50 Flows, 200 Runs, 10 Schedules (4 cron, 3 rate, 3 S3)")
    print_table(["what", "value"], [
        ["fault phases", "20% (8% throttle, 6% 5xx, 3% drop, 3% +300 ms) then 50% (20/15/5/10)"],
        ["controller SIGKILLs + restarts", f"{controller.kills} (at s {kill_log[:6]}…)"],
        ["kube-apiserver restarts", f"1 (at s {api_restarted})"],
        ["schedule firings (distinct)", sum(firings.values())],
        ["Runs expected / seen", f"{expected_runs} / {len(all_runs)}"],
        ["convergence after faults off", f"{converged:.1f} s" if converged is not None else "did not converge in 900 s"],
        ["duplicate executions (must be 0)", dup],
        ["duplicate schedule Runs (must be 0)", sched_dup],
        ["missing executions / schedule Runs", f"{missing} / {sched_missing}"],
        ["Runs in the wrong phase (must be 0)", len(wrong)],
        ["AWS resources before deletion", ", ".join(f"{v} {k}" for k, v in before.items())],
        *[[f"orphaned {k} (must be 0)", v] for k, v in leftovers.items()],
        ["executions in Step Functions", executions],
        ["AWS requests (all / during faults)", f"{totals.get('requests', 0)} / {during.get('requests', 0)}"],
        ["faults injected (throttle/5xx/drop/latency)", f"{totals.get('throttle', 0)}/{totals.get('serverError', 0)}/{totals.get('drop', 0)}/{totals.get('latency', 0)}"],
        ["SDK calls / attempts", f"{totals.get('invocations', 0)} / {totals.get('attempts', 0)}"],
        ["attempts per call (max attempt)", f"{totals.get('attempts', 0) / max(totals.get('invocations', 1), 1):.2f} ({totals.get('maxAttempt', 0)})"],
    ])
    if wrong:
        print("wrong phases:", wrong[:20])
    print()
    print("Per service (all phases):")
    rows = []
    for service, ops in sorted(stats.items()):
        t = proxy_totals({service: ops})
        rows.append([service, t.get("requests", 0), t.get("throttle", 0), t.get("serverError", 0), t.get("drop", 0), t.get("invocations", 0), t.get("attempts", 0), f"{t.get('attempts', 0) / max(t.get('invocations', 1), 1):.2f}", t.get("maxAttempt", 0)])
    print_table(["service", "requests", "throttles", "5xx", "drops", "calls", "attempts", "attempts/call", "max attempt"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", type=float, help="soak for this many minutes instead of the bench")
    parser.add_argument("--flowline-bin", required=True)
    parser.add_argument("--proxy-bin", required=True)
    parser.add_argument("--out", default="/tmp/flowline-chaos")
    args = parser.parse_args()
    if args.soak:
        soak(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
