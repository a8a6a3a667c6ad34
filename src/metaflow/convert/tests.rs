use super::*;

fn step(name: &str, kind: &str, next: &[&str], parents: &[&str]) -> StepDoc {
    StepDoc {
        name: name.into(),
        kind: kind.into(),
        next: next.iter().map(|s| s.to_string()).collect(),
        parents: parents.iter().map(|s| s.to_string()).collect(),
        ..StepDoc::default()
    }
}

fn doc(steps: Vec<StepDoc>) -> FlowDoc {
    FlowDoc {
        flow: "BranchFlow".into(),
        flow_file: "branch.py".into(),
        steps,
        parameters: Vec::new(),
        schedule: None,
        trigger: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    }
}

fn options(code: Code) -> Options {
    Options {
        name: "branch-flow".into(),
        namespace: Some("ml".into()),
        image: Some("python:3.12-slim".into()),
        code,
        metadata_service: None,
    }
}

const PACKAGE: &str = "s3://b/root/ml/branch-flow/_metaflow/code/abc.tgz";

#[test]
fn class_names_become_dns_labels() {
    assert_eq!(default_name("HelloBatchFlow"), "hello-batch-flow");
    assert_eq!(default_name("MyFlow2"), "my-flow2");
    assert_eq!(default_name("S3DataFlow"), "s3-data-flow");
}

#[test]
fn branch_and_join_mirror_the_graph_and_run_the_entrypoint_from_the_package() {
    let mut join = step("join", "linear", &["end"], &["a", "b"]);
    join.join = true;
    let described = doc(vec![
        step("start", "start", &["a", "b"], &[]),
        step("a", "linear", &["join"], &["start"]),
        step("b", "linear", &["join"], &["start"]),
        join,
        step("end", "linear", &[], &["join"]),
    ]);
    let converted = convert(&described, &options(Code::Package(PACKAGE.into()))).expect("converts");
    let spec = &converted.flow.spec;
    assert_eq!(spec.steps.len(), 5);
    assert_eq!(spec.steps[0].next, vec!["a", "b"]);
    assert!(spec.steps[3].join);
    assert_eq!(spec.steps[0].command, vec!["python3", "-c", BOOTSTRAP]);
    assert_eq!(spec.steps[3].args[0], PACKAGE);
    let args = spec.steps[3].args.join(" ");
    assert!(
        args.contains(
            "--flow-file branch.py --flow BranchFlow --step join --kind linear --parents a,b"
        ),
        "{args}"
    );
    assert_eq!(
        spec.batch.as_ref().and_then(|b| b.image.as_deref()),
        Some("python:3.12-slim")
    );
    let annotations = converted.flow.metadata.annotations.expect("annotated");
    assert_eq!(annotations[FLOW_ANNOTATION], "BranchFlow");
    assert_eq!(annotations[CODE_ANNOTATION], PACKAGE);
    assert_eq!(converted.flow.metadata.namespace.as_deref(), Some("ml"));
}

#[test]
fn foreach_parallel_retry_and_timeout_map_to_their_step_fields() {
    let mut split = step("start", "start", &["body"], &[]);
    split.foreach = true;
    let mut body = step("body", "foreach-body", &["join"], &["start"]);
    body.retries = 3;
    body.user_code_retries = 2;
    body.timeout_seconds = Some(180);
    body.batch.cpu = Some(2.0);
    let mut join = step("join", "foreach-join", &["gang_start"], &["body"]);
    join.join = true;
    join.split = Some("start".into());
    let mut gang_start = step("gang_start", "linear", &["gang"], &["join"]);
    gang_start.num_parallel = Some(3);
    let mut gang = step("gang", "parallel", &["gang_join"], &["gang_start"]);
    gang.num_nodes = Some(3);
    let mut gang_join = step("gang_join", "parallel-join", &["end"], &["gang"]);
    gang_join.join = true;
    gang_join.split = Some("gang_start".into());
    let described = doc(vec![
        split,
        body,
        join,
        gang_start,
        gang,
        gang_join,
        step("end", "linear", &[], &["gang_join"]),
    ]);
    let converted = convert(&described, &options(Code::InImage("/app".into()))).expect("converts");
    let steps = &converted.flow.spec.steps;
    assert!(steps[0].foreach.is_some());
    assert!(steps[0].args.contains(&"--foreach".to_owned()));
    assert_eq!(steps[1].retry.as_ref().map(|r| r.times), Some(3));
    assert_eq!(steps[1].timeout_seconds, Some(180));
    assert_eq!(steps[1].batch.as_ref().and_then(|b| b.cpu), Some(2.0));
    assert!(steps[1].args.join(" ").contains("--user-code-retries 2"));
    assert!(
        steps[2]
            .args
            .join(" ")
            .contains("--kind foreach-join --parents body --split start")
    );
    assert_eq!(steps[4].parallel.as_ref().map(|p| p.num_nodes), Some(3));
    assert!(
        steps[5]
            .args
            .join(" ")
            .contains("--split gang_start --num-parallel 3")
    );
    assert_eq!(
        steps[0].command,
        vec!["python3", "-m", "flowline_task.metaflow.entrypoint"]
    );
    assert_eq!(
        &steps[0].args[..2],
        &["--code-dir".to_owned(), "/app".to_owned()]
    );
    assert!(
        !converted
            .flow
            .metadata
            .annotations
            .expect("annotated")
            .contains_key(CODE_ANNOTATION)
    );
}

#[test]
fn schedule_and_s3_trigger_become_schedules_of_the_flow() {
    let mut described = doc(vec![
        step("start", "start", &["end"], &[]),
        step("end", "linear", &[], &["start"]),
    ]);
    described.schedule = Some(ScheduleDoc {
        cron: "0 0 * * *".into(),
    });
    described.trigger = Some(EventTrigger {
        s3: S3Trigger {
            bucket: "incoming".into(),
            prefix: Some("raw/".into()),
            suffix: None,
        },
    });
    let converted = convert(&described, &options(Code::Package(PACKAGE.into()))).expect("converts");
    assert_eq!(converted.schedules.len(), 2);
    assert_eq!(
        converted.schedules[0].spec.cron.as_deref(),
        Some("0 0 * * *")
    );
    assert_eq!(converted.schedules[0].spec.flow_ref.name, "branch-flow");
    let event = converted.schedules[1].spec.event.as_ref().expect("event");
    assert_eq!(event.s3.bucket, "incoming");
    let yaml = to_yaml(&converted).expect("yaml");
    assert_eq!(yaml.matches("kind: Schedule").count(), 2, "{yaml}");
    assert_eq!(
        yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")),
        2,
        "{yaml}"
    );
}

#[test]
fn what_the_describer_rejects_and_bad_names_are_all_reported() {
    let mut described = doc(vec![
        step("start", "start", &["Bad"], &[]),
        step("Bad", "linear", &["end"], &["start"]),
        step("end", "linear", &[], &["Bad"]),
    ]);
    described.errors = vec!["step start: @conda builds environments …".into()];
    let mut opts = options(Code::Package(PACKAGE.into()));
    opts.name = "A_Flow".into();
    let Unconvertible(errors) = convert(&described, &opts).expect_err("rejected");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("@conda"));
    assert!(errors.iter().any(|e| e.contains("--name")));
    assert!(errors.iter().any(|e| e.starts_with("step Bad:")));
}

#[test]
fn converted_flows_pass_the_crd_schema_and_the_graph_check() {
    let mut split = step("start", "start", &["body"], &[]);
    split.foreach = true;
    let mut join = step("join", "foreach-join", &["end"], &["body"]);
    join.join = true;
    join.split = Some("start".into());
    let described = doc(vec![
        split,
        step("body", "foreach-body", &["join"], &["start"]),
        join,
        step("end", "linear", &[], &["join"]),
    ]);
    let converted = convert(&described, &options(Code::Package(PACKAGE.into()))).expect("converts");
    let settings = crate::settings::Settings::default();
    let mut flow = converted.flow.clone();
    flow.metadata.uid = Some("uid-1".into());
    let rendered =
        crate::compile::render(&flow, &settings, crate::compile::secrets::Lookups::Offline)
            .expect("the compiler accepts the Flow");
    let asl = serde_json::to_string(&rendered).expect("json");
    assert!(
        asl.contains("ItemReader"),
        "the foreach is a Distributed Map: {asl}"
    );
}

#[test]
fn a_converted_flows_runs_are_named_as_metaflow_names_them() {
    let described = doc(vec![
        step("start", "start", &["end"], &[]),
        step("end", "linear", &[], &["start"]),
    ]);
    let converted = convert(&described, &options(Code::Package(PACKAGE.into()))).expect("converts");
    assert_eq!(
        metaflow_run(&converted.flow, "exec-1").as_deref(),
        Some("BranchFlow/fl-exec-1")
    );
    let plain = Flow::new("plain", converted.flow.spec.clone());
    assert_eq!(metaflow_run(&plain, "exec-1"), None);
}
