//! PRODUCT.md §1: `check` reports every problem with its place, `sign` and `send` sign correctly.

use crate::harness::*;
use std::path::Path;
use std::process::{Command, Output};

fn hookgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(args).env_remove("IMGGO_WEBHOOK_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const GOOD: &str = r#"listen: [{ addr: "127.0.0.1:18080" }]
routes:
  - name: imggo
    path: /webhooks/imggo
    upstream: "http://127.0.0.1:5000"
    signature: { scheme: imggo, secrets: ["${IT_SECRET}"] }
  - name: gh
    path: /webhooks/github
    upstream: "http://127.0.0.1:5000"
    signature: { scheme: github, secrets: ["${GH_SECRET:-fallback}"] }
"#;

#[test]
fn check_prints_one_line_per_route() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.yaml", GOOD);
    let out = hookgate(&["check", "-c", &file], &[("IT_SECRET", "s")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("imggo") && lines[1].contains("gh"));
}

#[test]
fn check_reports_yaml_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        &GOOD.replace(
            "    path: /webhooks/github\n",
            "    path: /webhooks/github\n    colour: blue\n",
        ),
    );
    let out = hookgate(&["check", "-c", &file], &[("IT_SECRET", "s")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with(&format!("{file}:9:")), "{err}");
    assert!(err.contains("colour"), "{err}");

    let file = write(
        dir.path(),
        "type.yaml",
        &GOOD.replace(
            "listen: [{ addr: \"127.0.0.1:18080\" }]",
            "listen: [{ addr: \"127.0.0.1:18080\" }]\nthreads: many",
        ),
    );
    let err =
        String::from_utf8(hookgate(&["check", "-c", &file], &[("IT_SECRET", "s")]).stderr).unwrap();
    assert!(err.starts_with(&format!("{file}:2:")), "{err}");
}

#[test]
fn check_reports_every_field_problem_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"listen: [{ addr: "127.0.0.1:18080" }]
trusted_proxies: ["10.0.0.0/33"]
store: { url: "mongodb://x" }
routes:
  - name: imggo
    path: /webhooks/imggo
    upstream: "http://127.0.0.1:5000"
    allow_ips: ["203.0.113.0/24", "not-a-cidr"]
    signature: { scheme: imggo, secrets: ["${IT_UNSET_SECRET}"] }
    schema: schemas/missing.json
  - name: other
    path: /webhooks/other
    upstream: "http://127.0.0.1:5000"
    allow_ips: []
    signature: { scheme: md5, secrets: ["x"] }
    idempotency: { key: "/id", lease: 10s }
"#;
    let file = write(dir.path(), "fields.yaml", text);
    let out = hookgate(&["check", "-c", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "trusted_proxies[0]: ",
        "store.url: ",
        "routes[imggo].allow_ips[1]: ",
        "routes[imggo].signature.secrets[0]: ",
        "IT_UNSET_SECRET",
        "routes[imggo].schema: ",
        "missing.json",
        "routes[other].allow_ips: ",
        "routes[other].signature.scheme: unknown scheme \"md5\"; expected one of imggo, hmac, ",
        "routes[other].idempotency.lease: ",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(String::from_utf8(out.stdout).unwrap().is_empty());
}

#[test]
fn sign_prints_the_header_the_route_expects() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.yaml", GOOD);
    let body = write(dir.path(), "body.json", r#"{"event":"job.completed"}"#);
    let out = hookgate(
        &["sign", "-c", &file, "--route", "imggo", &body],
        &[("IT_SECRET", "s3cret")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "X-ImgGo-Signature: {}\n",
        imggo_signature_with("s3cret", br#"{"event":"job.completed"}"#)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);

    let out = hookgate(
        &["sign", "-c", &file, "--route", "gh", &body],
        &[("IT_SECRET", "s")],
    );
    let expected = format!(
        "X-Hub-Signature-256: sha256={}\n",
        imggo_signature_with("fallback", br#"{"event":"job.completed"}"#)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);

    let out = hookgate(
        &["sign", "-c", &file, "--route", "nope", &body],
        &[("IT_SECRET", "s")],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn send_delivers_a_signed_body() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    ))
    .await;
    let body = write(
        gw.dir.path(),
        "body.json",
        &String::from_utf8(delivery("job.completed", "sent")).unwrap(),
    );
    let config = gw.config.to_string_lossy().into_owned();
    let url = gw.https_url("/webhooks/imggo");
    let run = || {
        let (config, url, body) = (config.clone(), url.clone(), body.clone());
        tokio::task::spawn_blocking(move || {
            hookgate(
                &["send", &url, "-c", &config, "--route", "imggo", &body],
                &[],
            )
        })
    };
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("200"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already_processed"));
    assert_eq!(up.count(), 1);
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["sign", "--help"],
        vec!["send", "--help"],
    ] {
        let out = hookgate(&cmd, &[]);
        assert!(out.status.success(), "{cmd:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("Usage:") && text.contains("--config") || cmd == ["--help"],
            "{cmd:?}: {text}"
        );
    }
    let top = String::from_utf8(hookgate(&["--help"], &[]).stdout).unwrap();
    for sub in ["run", "check", "sign", "send", "--log-format"] {
        assert!(top.contains(sub), "top-level help lacks {sub}");
    }
}

#[test]
fn check_reports_queue_route_problems_by_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"listen: [{ addr: "127.0.0.1:18080" }]
admin: { addr: "0.0.0.0:9090" }
store: { url: "memory" }
routes:
  - name: q
    path: /q
    mode: queue
    upstreams:
      - { name: app, url: "http://127.0.0.1:5000" }
      - { name: app, url: "http://127.0.0.1:5001" }
    delivery:
      retry: [30s, soon]
      jitter: lots
      rate: fast
  - name: empty
    path: /empty
    mode: queue
    upstreams: []
"#;
    let file = write(dir.path(), "queue.yaml", text);
    let out = hookgate(&["check", "-c", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "routes[q].upstreams[1].name: destination name \"app\" is used twice",
        "routes[q].delivery.retry[1]: invalid duration \"soon\"",
        "routes[q].delivery.jitter:",
        "routes[q].delivery.rate:",
        "routes[empty].upstreams: a queue route needs at least one destination",
        "routes[q].mode: a queue route needs a durable store",
        "admin.token: required when admin.addr is not loopback",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let ok = text
        .replace("memory", "file:state.db")
        .replace(
            "name: app, url: \"http://127.0.0.1:5001\"",
            "name: analytics, url: \"http://127.0.0.1:5001\"",
        )
        .replace("[30s, soon]", "[30s, 1m]")
        .replace("lots", "10%")
        .replace("rate: fast", "rate: 50/s")
        .replace(
            "upstreams: []",
            "upstreams: [{ name: a, url: \"http://127.0.0.1:5002\" }]",
        )
        .replace("0.0.0.0:9090\" }", "0.0.0.0:9090\", token: \"t\" }");
    let file = write(dir.path(), "queue-ok.yaml", &ok);
    let out = hookgate(&["check", "-c", &file], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "q: POST /q -> queue -> app=http://127.0.0.1:5000, analytics=http://127.0.0.1:5001"
        ),
        "{stdout}"
    );
}

#[test]
fn check_warns_when_two_routes_share_a_secret_and_upstream_but_not_a_scope() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"listen: [{ addr: "127.0.0.1:18080" }]
routes:
  - name: a
    path: /a
    upstream: "http://127.0.0.1:5000"
    signature: { scheme: imggo, secrets: ["${IT_SECRET}"] }
    idempotency: { key: /id }
  - name: b
    path: /b
    upstream: "http://127.0.0.1:5000"
    signature: { scheme: imggo, secrets: ["${IT_SECRET}"] }
    idempotency: { key: /id }
"#;
    let file = write(dir.path(), "shared.yaml", text);
    let out = hookgate(&["check", "-c", &file], &[("IT_SECRET", "s")]);
    assert!(out.status.success(), "a warning is not an error");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("warning: routes[a] and routes[b] share a secret and an upstream but not an idempotency scope"),
        "{err}"
    );
    let scoped = text.replace("{ key: /id }", "{ key: /id, scope: shared }");
    let file = write(dir.path(), "scoped.yaml", &scoped);
    let out = hookgate(&["check", "-c", &file], &[("IT_SECRET", "s")]);
    assert!(out.status.success());
    assert!(!String::from_utf8(out.stderr).unwrap().contains("warning"));
}
