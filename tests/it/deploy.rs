//! What ships beside the binary (PRODUCT.md §8): the Grafana dashboard queries only metrics
//! hookgate exports, the Kubernetes manifests validate and keep their promises (non-root,
//! read-only root file system, probes, grace), the PrometheusRule carries the tested alert rules,
//! and the systemd unit verifies.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

/// Every `hookgate_…` metric name (and recording rule) a PromQL text uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("hookgate") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_a_dashboard_panel_queries_is_one_hookgate_exports() {
    let metrics_src = std::fs::read_to_string(repo("src/metrics.rs")).unwrap();
    let rules = std::fs::read_to_string(repo("config/prometheus/alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("config/grafana/hookgate.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                let exported = metrics_src.contains(&format!("\"{family}\""));
                let recorded = name.contains(':') && rules.contains(&format!("record: {name}"));
                assert!(
                    exported || recorded,
                    "panel {:?} queries {name}, which hookgate does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric uses found");
    // The queue's metrics are on the dashboard.
    for name in [
        "hookgate_queue_deliveries",
        "hookgate_queue_oldest_pending_seconds",
        "hookgate_delivery_attempts_total",
    ] {
        assert!(
            dashboard.to_string().contains(name),
            "no panel shows {name}"
        );
    }
}

#[test]
fn the_prometheus_rule_carries_the_tested_alert_rules() {
    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    let alerts = yaml("config/prometheus/alerts.yml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "regenerate with scripts/prometheusrule.py"
    );
}

#[test]
fn the_kubernetes_manifests_validate_and_keep_their_promises() {
    let files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("prometheusrule.yaml"))
        .collect();
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate must be installed (scripts/setup.sh: pip install kubernetes-validate)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The ConfigMap's config passes `check`, and the pod's grace outlasts its grace_period.
    let config_map = yaml("deploy/kubernetes/configmap.yaml");
    let text = config_map["data"]["hookgate.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::write(tls.join("tls.crt"), "").unwrap();
    std::fs::write(tls.join("tls.key"), "").unwrap();
    let file = dir.path().join("hookgate.yaml");
    // Upstream host names are resolved when the config loads; the cluster's are not resolvable
    // here, so the check runs on the loopback address instead.
    let text_here = text
        .replace("/etc/hookgate/tls", &tls.to_string_lossy())
        .replace("imggo-app.default.svc.cluster.local", "127.0.0.1");
    std::fs::write(&file, text_here).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c"])
        .arg(&file)
        .envs([
            ("IMGGO_WEBHOOK_SECRET", "s"),
            ("HOOKGATE_ADMIN_TOKEN", "t"),
            ("HOOKGATE_POSTGRES_URL", "postgres://hookgate@db/hookgate"),
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let grace: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    let grace_s: u64 = grace["grace_period"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination > grace_s + 5,
        "{termination}s does not outlast grace_period {grace_s}s and the preStop pause"
    );
}

#[test]
fn the_systemd_unit_verifies_and_reloads_with_sighup() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/hookgate.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hookgate.service");
    // systemd-analyze checks that the binary exists: point it at the one just built.
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/hookgate", env!("CARGO_BIN_EXE_hookgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze must be installed (systemd)");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}
