//! The Helm chart against the code and its docs, offline: every controller setting is a chart
//! value, and the chart's README carries the Argo CD health script exactly as it is tested.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // Test code: failing loudly is the point.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The environment variables `flowline controller` reads (`env = "..."` of its clap args).
fn controller_env_vars() -> Vec<String> {
    let mut names = Vec::new();
    for file in ["src/settings.rs", "src/controller/mod.rs"] {
        let text = read(file);
        for part in text.split("env = \"").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_controller_setting_is_a_chart_value() {
    let env = controller_env_vars();
    assert!(
        env.len() >= 25 && env.iter().any(|n| n == "FLOWLINE_WATCH_NAMESPACE"),
        "found the controller's settings: {env:?}"
    );
    let helpers = read("charts/flowline/templates/_helpers.tpl");
    // Settings of leader election, the HTTP endpoint and tenancy are part of the chart too.
    let planned = [
        "FLOWLINE_LEADER_ELECTION",
        "FLOWLINE_LEASE_NAME",
        "FLOWLINE_LEASE_NAMESPACE",
        "FLOWLINE_HTTP_ADDR",
        "FLOWLINE_ALLOWED_ROLES",
        "FLOWLINE_ALLOWED_JOB_QUEUES",
        "FLOWLINE_ALLOWED_SECRETS",
        "FLOWLINE_ALLOWED_TRIGGER_BUCKETS",
    ];
    let missing: Vec<&str> = env
        .iter()
        .map(String::as_str)
        .chain(planned)
        .filter(|name| !helpers.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/flowline/templates/_helpers.tpl (flowline.env) does not set {missing:?}; add a \
         value to values.yaml and values.schema.json and set the variable from it"
    );
}

#[test]
fn chart_readme_carries_the_health_script_verbatim() {
    let script = read("charts/flowline/health/health.lua");
    let readme = read("charts/flowline/README.md");
    assert!(
        readme.contains(&format!("```lua\n{script}```")),
        "charts/flowline/README.md must show charts/flowline/health/health.lua verbatim in a \
         ```lua block"
    );
    // The argocd-cm example embeds the same script, indented as a YAML block scalar.
    let indented: String = script
        .lines()
        .map(|line| {
            if line.trim().is_empty() {
                "\n".to_owned()
            } else {
                format!("    {line}\n")
            }
        })
        .collect();
    assert!(
        readme.contains(&format!(
            "resource.customizations.health.flowline.io_Flow: &flowline-health |\n{indented}"
        )),
        "the argocd-cm example in charts/flowline/README.md must embed health.lua unchanged"
    );
    for kind in ["Run", "Schedule"] {
        assert!(readme.contains(&format!(
            "resource.customizations.health.flowline.io_{kind}: *flowline-health"
        )));
    }
}
