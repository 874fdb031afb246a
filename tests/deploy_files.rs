//! The deployment files under `deploy/` checked the way their tools would check them, so a
//! broken rule, dashboard or manifest fails CI instead of a deployment:
//! - Grafana: the dashboard is JSON with the fields Grafana needs, and every metric its
//!   queries (and the alerts') name is one turnd exports — asked of a running turnd.
//! - The two turnd configurations shipped (compose's turnd.toml, the ConfigMap's) load.
//! - The Dockerfile: a builder pinned by digest, the `binary` and runtime stages the container
//!   test relies on.
//!
//! And in tier 2 (`mod external`, feature `external`; tests/README.md), with the tools:
//! - Prometheus: `promtool check config` (which checks the rule files it names too),
//!   `promtool check rules`, and `promtool test rules` (a unit test per alert).
//! - Kubernetes: `kubernetes-validate --strict` against the bundled Kubernetes schemas (the
//!   PodMonitor, a CRD, has none), then `tests/deploy/check_manifests.py` for what no schema
//!   says (hostNetwork, probes, grace period > drain_timeout, selectors…).
//! - Compose: the file loads as YAML, and its services, mounts and ports agree with the
//!   Prometheus and Grafana files (`check_manifests.py compose`).
//!
//! Those tools are required there (promtool: Debian package `prometheus`; kubernetes-validate
//! and PyYAML: `tests/requirements-deploy.txt`; `.ci/run` installs both): without them the
//! tier-2 tests fail.

mod common;
mod raw;

use common::http_get;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

#[test]
fn dashboard_is_a_grafana_dashboard_with_a_query_per_panel() {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/turnd.json")).expect("read");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(d["uid"], "turnd");
    assert!(d["schemaVersion"].as_u64().is_some(), "schemaVersion");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: duplicate id"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
        }
    }
    // What issue 6 asks the dashboard to show.
    for needle in [
        "turnd_allocations_active",
        "turnd_relayed_bytes_total",
        "turnd_auth_failures_total",
        "turnd_peers_denied_total",
        "turnd_datagrams_dropped_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(needle),
            "the dashboard does not show {needle}"
        );
    }
    assert!(
        text.contains("sum by (direction) (rate(turnd_relayed_bytes_total"),
        "relayed bytes/s each way"
    );
}

#[test]
fn dashboard_and_alerts_name_only_metrics_turnd_exports() {
    let exported = exported_metric_names();
    // Series Prometheus makes itself, for every target.
    let synthetic = ["up"];

    let text = std::fs::read_to_string(deploy("grafana/dashboards/turnd.json")).expect("read");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries: Vec<String> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            queries.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            queries.push(q.to_string());
        }
    }
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("read");
    queries.push(alerts);

    let mut used = BTreeSet::new();
    for q in &queries {
        used.extend(metric_names_in(q));
    }
    assert!(used.len() >= 12, "too few metric names found: {used:?}");
    let unknown: Vec<_> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !synthetic.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the alerts name metrics turnd does not export: {unknown:?}\n\
         exported: {exported:?}"
    );
    assert!(
        used.contains("up") && used.contains("turnd_draining"),
        "the liveness and drain alerts"
    );
}

/// Every metric name in `query`: identifiers that start like turnd's and the process
/// collector's, or are exactly `up`. (PromQL functions and label names never start so.)
fn metric_names_in(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("turnd_") || w.starts_with("process_") || *w == "up")
        .map(str::to_string)
        .collect()
}

/// The sample names a running turnd exposes: each family's `# TYPE` line with its suffixes
/// (`_total` for counters; `_bucket`, `_sum`, `_count` for histograms), so series that have
/// no sample yet count too.
fn exported_metric_names() -> BTreeSet<String> {
    let server = raw::TestServer::start(raw::base_args());
    let text = http_get(server.metrics_addr(), "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            let (Some(name), Some(kind)) = (w.next(), w.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", ""],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                names.insert(name.to_string());
            }
        }
    }
    for must in [
        "turnd_relayed_bytes_total",
        "turnd_allocation_duration_seconds_bucket",
        "turnd_draining",
        "process_cpu_seconds_total",
    ] {
        assert!(names.contains(must), "{must} not exported:\n{text}");
    }
    names
}

#[test]
fn the_shipped_turnd_configurations_load() {
    // The compose file's, as is.
    let args = turnd::config::ConfigArgs {
        config: Some(deploy("compose/turnd.toml")),
        ..Default::default()
    };
    turnd::config::load_from(&args, &HashMap::new())
        .unwrap_or_else(|e| panic!("deploy/compose/turnd.toml: {e}"));
    // The fleet profile's two nodes, which share a store and differ in their ports and id.
    let fleet: Vec<turnd::config::Config> = ["fleet-a", "fleet-b"]
        .iter()
        .map(|n| {
            let args = turnd::config::ConfigArgs {
                config: Some(deploy(&format!("compose/{n}.toml"))),
                ..Default::default()
            };
            turnd::config::load_from(&args, &HashMap::new())
                .unwrap_or_else(|e| panic!("deploy/compose/{n}.toml: {e}"))
        })
        .collect();
    assert!(fleet[0].store.is_some() && fleet[0].store == fleet[1].store);
    assert_ne!(fleet[0].node_id, fleet[1].node_id);
    assert_ne!(fleet[0].listen, fleet[1].listen);
    assert_ne!(fleet[0].metrics_listen, fleet[1].metrics_listen);

    // The ConfigMap's, with the Secret's variables, as the DaemonSet gives them.
    let cm = std::fs::read_to_string(deploy("kubernetes/configmap.yaml")).expect("read");
    let toml: String = cm
        .split_once("turnd.toml: |\n")
        .expect("a turnd.toml key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = common::ScratchDir::new("deploy-configmap");
    let path = dir.path().join("turnd.toml");
    std::fs::write(&path, toml).expect("write");
    let env: HashMap<String, String> = [
        ("TURND_AUTH_SECRETS", "s1"),
        ("TURND_ADMIN_TOKEN", "t"),
        ("TURND_RELAY_IPS", "10.0.0.7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let args = turnd::config::ConfigArgs {
        config: Some(path),
        ..Default::default()
    };
    let c = turnd::config::load_from(&args, &env)
        .unwrap_or_else(|e| panic!("deploy/kubernetes/configmap.yaml's turnd.toml: {e}"));
    assert_eq!(c.metrics_listen.to_string(), "0.0.0.0:9641");
}

#[test]
fn dockerfile_pins_its_builder_and_keeps_its_replaceable_stages() {
    // tests/container.rs builds the image with the `binary` stage replaced and so never runs
    // the builder stage (it needs a registry); these are the builder's promises, read.
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 3, "{froms:?}");
    assert!(
        froms[0].contains("rust:")
            && froms[0].contains("@sha256:")
            && froms[0].ends_with(" AS builder"),
        "the builder is a Rust image pinned by digest: {}",
        froms[0]
    );
    assert_eq!(froms[1], "FROM scratch AS binary");
    assert_eq!(froms[2], "FROM scratch");
    for needle in [
        "cargo build --release --locked --bin turnd",
        // The release image carries the kernel fast path (docs/xdp.md).
        "--features xdp",
        "COPY ebpf ./ebpf",
        "+crt-static",
        "COPY --from=binary /turnd /usr/local/bin/turnd",
        "USER 65532:65532",
        "\"healthcheck\"",
    ] {
        assert!(text.contains(needle), "the Dockerfile lacks {needle}");
    }
}

/// Tier 2 (`cargo test --features external`; `.ci/run` runs it): the checks that need the
/// deployment tools themselves — promtool (Debian package `prometheus`), kubernetes-validate and
/// python3 with PyYAML (`pip install -r tests/requirements-deploy.txt`). A missing tool fails
/// the test with the way to get it.
#[cfg(feature = "external")]
mod external {
    use super::*;
    use common::{require_tool, run_tool};
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

    /// Runs a tool and panics with its output unless it exits 0.
    #[track_caller]
    fn run_ok(name: &str, args: &[&str], dir: &Path) -> String {
        let path = require_tool(name);
        let mut cmd = Command::new(path);
        cmd.args(args).current_dir(dir);
        let (status, out) = run_tool(name, cmd, TOOL_TIMEOUT);
        assert!(status.success(), "{name} {args:?}: {status}\n{out}");
        out
    }

    #[test]
    fn promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() {
        let dir = deploy("prometheus");
        run_ok("promtool", &["check", "config", "prometheus.yml"], &dir);
        run_ok("promtool", &["check", "rules", "alerts.yml"], &dir);
        let out = run_ok("promtool", &["test", "rules", "alerts_test.yml"], &dir);
        assert!(out.contains("SUCCESS"), "{out}");
    }

    #[test]
    fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
        let dir = deploy("kubernetes");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("deploy/kubernetes")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml"))
            // A CRD: no schema in kubernetes-validate; check_manifests.py checks its shape.
            .filter(|n| n != "podmonitor.yaml")
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        let mut args = vec!["--strict"];
        args.extend(files.iter().map(String::as_str));
        let out = run_ok("kubernetes-validate", &args, &dir);
        for f in &files {
            assert!(
                out.contains(&format!("{f} passed")),
                "{f} not validated:\n{out}"
            );
        }
        run_ok(
            "python3",
            &[
                "tests/deploy/check_manifests.py",
                "kubernetes",
                &repo().display().to_string(),
            ],
            &repo(),
        );
    }

    #[test]
    fn compose_file_agrees_with_the_prometheus_and_grafana_files() {
        run_ok(
            "python3",
            &[
                "tests/deploy/check_manifests.py",
                "compose",
                &repo().display().to_string(),
            ],
            &repo(),
        );
    }
}
