//! The CRDs checked in under `crds/` (applied by the e2e tests and anyone installing by hand)
//! and the Helm chart's copy under `charts/flowline/crds/` must be exactly what the types in
//! `src/api` generate.

use std::path::Path;

#[test]
fn crds_folder_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/flowline.io_crds.yaml");
    let generated = flowline::api::crds_yaml().expect("the CRDs serialize to YAML");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date with the types in src/api; regenerate it with\n\n    {}\n",
        path.display(),
        flowline::api::CRDS_REGENERATE_COMMAND,
    );
}

#[test]
fn crds_folder_holds_only_the_generated_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["flowline.io_crds.yaml"],
        "crds/ is applied as a whole (`kubectl apply -f crds/`); stray files would be applied too"
    );
}

#[test]
fn chart_crds_match_the_types() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/flowline/crds/flowline.io_crds.yaml");
    let generated = flowline::api::crds_yaml().expect("the CRDs serialize to YAML");
    let in_chart = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        in_chart == generated,
        "{} (the Helm chart's copy of the CRDs) is out of date with the types in src/api; \
         regenerate crds/ and the chart's copy with\n\n    make crds\n",
        path.display(),
    );
}
