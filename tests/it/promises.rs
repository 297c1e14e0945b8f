//! Promises of PRODUCT.md that no other test reaches: the step order when a request fails two
//! steps at once, the defaults a route gets when it says nothing, the generic and timestamped
//! schemes end to end, inline and draft-7 schemas, relative paths, the request id, the log
//! format and level, the default config path, and a graceful stop.

use crate::harness::*;
use hmac::{Hmac, Mac};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Posts `body` to `url` with `headers`; returns (status, code or status field, content type).
async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String, String) {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (status, code, _) = answer(resp).await;
    (status, code, content_type)
}

fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("X-ImgGo-Signature", imggo_signature(body))]
}

#[tokio::test]
async fn a_request_failing_two_steps_is_answered_by_the_earlier_one() {
    let up = Upstream::start().await;
    let routes = format!(
        "routes:\n{}{}{}{}",
        // Our address (127.0.0.1) is not allowed here.
        ImggoRoute::new("fenced", "/webhooks/fenced", &up.url())
            .https_only()
            .with("    allow_ips: [\"203.0.113.0/24\"]\n")
            .yaml(),
        ImggoRoute::new("secure", "/webhooks/secure", &up.url())
            .https_only()
            .max_body("1KiB")
            .yaml(),
        ImggoRoute::new("small", "/webhooks/small", &up.url())
            .max_body("1KiB")
            .yaml(),
        // No schema: the events step comes right after the signature.
        "  - name: loose\n    path: /webhooks/loose\n    upstream: \"UP\"\n    https_only: false\n    signature: { scheme: imggo, secrets: [\"it-secret\"] }\n    events: { pointer: /event, allow: [job.completed] }\n    idempotency: { key: [\"/job_id\"] }\n"
            .replace("UP", &up.url()),
    );
    let gw = Gateway::start(&routes).await;
    let url = |p: &str| gw.http_url(p);
    let big = vec![b'x'; 2048];

    // Route before method: an unknown path with GET is 404, not 405.
    let resp = client().get(url("/webhooks/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // Method before address: GET from a refused address is 405.
    let resp = client().get(url("/webhooks/fenced")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    // (path, headers, body, status, code)
    type Case = (
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // Address before transport: plain HTTP from a refused address.
        (
            "/webhooks/fenced",
            vec![],
            b"{}".to_vec(),
            403,
            "ip_not_allowed",
        ),
        // Transport before size: plain HTTP and too large.
        (
            "/webhooks/secure",
            vec![],
            big.clone(),
            403,
            "https_required",
        ),
        // Size before signature presence: too large and unsigned.
        (
            "/webhooks/small",
            vec![],
            big.clone(),
            413,
            "payload_too_large",
        ),
        // Signature before parse: a bad signature on a body that is not JSON.
        (
            "/webhooks/small",
            vec![("X-ImgGo-Signature", "00".repeat(32))],
            b"not json".to_vec(),
            401,
            "signature_invalid",
        ),
        // Schema before events: a not-allowed event (which would be ignored) that also breaks
        // the schema is a schema violation.
        (
            "/webhooks/small",
            signed(br#"{"event":"job.queued","job_id":"","status":"queued"}"#),
            br#"{"event":"job.queued","job_id":"","status":"queued"}"#.to_vec(),
            422,
            "schema_violation",
        ),
        // Events before idempotency: a not-allowed event without its key is ignored.
        (
            "/webhooks/loose",
            signed(br#"{"event":"job.queued"}"#),
            br#"{"event":"job.queued"}"#.to_vec(),
            200,
            "ignored",
        ),
    ];
    for (path, headers, body, status, code) in cases {
        let (got, got_code, content_type) = post(&url(path), &headers, body).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{path}");
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
    }
    assert_eq!(up.count(), 0, "a refused request reached the app");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_forwarded_where_nothing_needs_json() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{ name: raw, path: /raw, upstream: \"{}\", https_only: false, signature: {{ scheme: imggo, secrets: [\"{SECRET}\"] }} }}\n",
        up.url()
    ))
    .await;
    let body = b"plain text, <not> {json".to_vec();
    let (status, _, _) = post(&gw.http_url("/raw"), &signed(&body), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(up.received()[0].body, body);
}

#[tokio::test]
async fn a_route_that_says_nothing_gets_https_only_and_a_1_mib_max_body() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{ name: plain, path: /plain, upstream: \"{}\", signature: {{ scheme: imggo, secrets: [\"{SECRET}\"] }} }}\n",
        up.url()
    ))
    .await;
    let body = b"{}".to_vec();
    let (status, code, _) = post(&gw.http_url("/plain"), &signed(&body), body.clone()).await;
    assert_eq!((status, code.as_str()), (403, "https_required"));

    let https = |body: Vec<u8>| {
        let url = gw.https_url("/plain");
        async move { post(&url, &signed(&body), body).await }
    };
    let exactly = vec![b' '; 1 << 20];
    assert_eq!(https(exactly).await.0, 200);
    let over = vec![b' '; (1 << 20) + 1];
    let (status, code, _) = https(over).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(up.count(), 1);
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test]
async fn stripe_accepts_either_rotated_secret_within_its_default_five_minutes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{ name: stripe, path: /stripe, upstream: \"{}\", https_only: false, signature: {{ scheme: stripe, secrets: [\"whsec_old\", \"whsec_new\"] }} }}\n",
        up.url()
    ))
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let send = |secret: &'static str, age: u64, id: &'static str| {
        let url = gw.http_url("/stripe");
        async move {
            let body = format!(r#"{{"id":"{id}","type":"charge.succeeded"}}"#).into_bytes();
            let t = (now - age).to_string();
            let v1 =
                hmac_hex::<Hmac<sha2::Sha256>>(secret.as_bytes(), &[t.as_bytes(), b".", &body]);
            let header = format!("t={t},v1={v1}");
            post(&url, &[("Stripe-Signature", header)], body).await
        }
    };
    assert_eq!(send("whsec_new", 0, "evt_1").await.0, 200);
    assert_eq!(send("whsec_old", 240, "evt_2").await.0, 200);
    let (status, code, _) = send("whsec_new", 360, "evt_3").await;
    assert_eq!((status, code.as_str()), (401, "timestamp_out_of_tolerance"));
    let (status, code, _) = send("whsec_other", 0, "evt_4").await;
    assert_eq!((status, code.as_str()), (401, "signature_invalid"));
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn the_generic_hmac_scheme_with_sha1_and_hex() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{ name: generic, path: /generic, upstream: \"{}\", https_only: false, signature: {{ scheme: hmac, header: X-Sig, algorithm: sha1, encoding: hex, prefix: \"sha1=\", secrets: [\"k1\"] }} }}\n",
        up.url()
    ))
    .await;
    let body = br#"{"n":1}"#.to_vec();
    let good = format!("sha1={}", hmac_hex::<Hmac<sha1::Sha1>>(b"k1", &[&body]));
    let sha256 = format!("sha1={}", hmac_hex::<Hmac<sha2::Sha256>>(b"k1", &[&body]));
    let url = gw.http_url("/generic");
    assert_eq!(post(&url, &[("X-Sig", good)], body.clone()).await.0, 200);
    let (status, code, _) = post(&url, &[("X-Sig", sha256)], body.clone()).await;
    assert_eq!((status, code.as_str()), (401, "signature_invalid"));
    let (status, code, _) = post(&url, &[], body).await;
    assert_eq!((status, code.as_str()), (401, "signature_missing"));
}

#[tokio::test]
async fn an_inline_draft_7_schema_and_a_schema_path_relative_to_the_config() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/order.json"),
        r#"{"type":"object","required":["order"]}"#,
    )
    .unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("hookgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: [{{ addr: "127.0.0.1:{http}" }}]
grace_period: 1s
upgrade_socket: {sock}
admin: {{ addr: "127.0.0.1:{admin}" }}
routes:
  - name: inline
    path: /inline
    upstream: "{up}"
    https_only: false
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema:
      $schema: "http://json-schema.org/draft-07/schema#"
      type: object
      required: [id]
      properties: {{ id: {{ type: integer }} }}
  - name: relative
    path: /relative
    upstream: "{up}"
    https_only: false
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema: schemas/order.json
"#,
            sock = dir.path().join("u.sock").display(),
            up = up.url()
        ),
    )
    .unwrap();
    // Started from another directory: the schema path resolves against the config's folder.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["run", "-c"])
        .arg(&config)
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(http).await;
    let url = |p: &str| format!("http://127.0.0.1:{http}{p}");
    for (path, body, status) in [
        ("/inline", r#"{"id":7}"#, 200),
        ("/inline", r#"{"id":"7"}"#, 422),
        ("/inline", r#"{}"#, 422),
        ("/relative", r#"{"order":1}"#, 200),
        ("/relative", r#"{"id":1}"#, 422),
    ] {
        let body = body.as_bytes().to_vec();
        assert_eq!(
            post(&url(path), &signed(&body), body).await.0,
            status,
            "{path}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(up.count(), 2);
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_without_an_id_gets_one_and_the_app_sees_it() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    let body = delivery("job.completed", "rid");
    let (status, _, _) = post(&gw.http_url("/webhooks/imggo"), &signed(&body), body).await;
    assert_eq!(status, 200);
    let received = up.received();
    let id = received[0]
        .header("x-request-id")
        .expect("the app gets an X-Request-Id");
    assert!(id.len() >= 16, "{id}");
    assert!(
        gw.settled_log()
            .await
            .contains(&format!("\"request_id\":\"{id}\"")),
        "the request's log event carries the same id"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_delivery_finish_within_the_grace_period() {
    let up = Upstream::start().await;
    up.always(200, Duration::from_millis(600));
    let gw = Gateway::imggo(&up).await;
    let body = delivery("job.completed", "term");
    let url = gw.http_url("/webhooks/imggo");
    let in_flight = tokio::spawn(async move { post(&url, &signed(&body), body.clone()).await });
    // In flight: the app has it and is answering.
    eventually("the delivery at the app", || up.count() == 1).await;
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    let (status, _, _) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the delivery in flight at SIGTERM finishes");
    // grace_period is 1s in the harness; Pingora's own shutdown adds its timeout on top.
    let pid = gw.pid();
    eventually_within("the process exits", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(up.count(), 1);
    // The gateway writes its log lines out every 20 ms; what it logged while stopping (the
    // in-flight delivery's line, and its last line, logged just before it exits) is written
    // before the process ends.
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"target\":\"hookgate::request\"")
                && l.contains("\"outcome\":\"forwarded\"")),
        "{log}"
    );
    assert!(log.contains("hookgate stopped"), "{log}");
}

/// Starts `hookgate run` with `args` and `env` in `cwd` on a one-route config, sends one
/// delivery, stops it, and returns what it printed.
async fn run_and_capture(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let up = Upstream::start().await;
    let (http, admin) = (free_port(), free_port());
    std::fs::create_dir_all(cwd.join("config")).unwrap();
    std::fs::write(
        cwd.join("config/hookgate.yaml"),
        format!(
            "listen: [{{ addr: \"127.0.0.1:{http}\" }}]\ngrace_period: 1s\nupgrade_socket: {}\nadmin: {{ addr: \"127.0.0.1:{admin}\" }}\nroutes:\n  - {{ name: r, path: /r, upstream: \"{}\", https_only: false, signature: {{ scheme: imggo, secrets: [\"{SECRET}\"] }} }}\n",
            cwd.join("u.sock").display(),
            up.url()
        ),
    )
    .unwrap();
    let out = cwd.join("out.log");
    let file = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_port(http).await;
    let body = b"{}".to_vec();
    let (status, _, _) = post(&format!("http://127.0.0.1:{http}/r"), &signed(&body), body).await;
    assert_eq!(status, 200);
    // SIGTERM, and the process's end: everything it was going to log is written by then, so
    // what the output lacks it did not log.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "{exited}");
    std::fs::read_to_string(out).unwrap()
}

#[tokio::test]
async fn run_reads_config_hookgate_yaml_by_default_and_logs_json_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_and_capture(dir.path(), &["run"], &[]).await;
    let request = out
        .lines()
        .find(|l| l.contains("\"message\":\"request\""))
        .unwrap_or_else(|| panic!("no request event:\n{out}"));
    let event: serde_json::Value = serde_json::from_str(request).unwrap();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["outcome"], "forwarded");
}

#[tokio::test]
async fn log_format_pretty_and_rust_log_are_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_and_capture(dir.path(), &["--log-format", "pretty", "run"], &[]).await;
    let request = out
        .lines()
        .find(|l| l.contains("request") && l.contains("forwarded"))
        .unwrap_or_else(|| panic!("no request event:\n{out}"));
    assert!(!request.trim_start().starts_with('{'), "{request}");
    assert!(request.contains("INFO"), "{request}");

    let dir = tempfile::tempdir().unwrap();
    let out = run_and_capture(dir.path(), &["run"], &[("RUST_LOG", "warn")]).await;
    assert!(
        !out.contains("\"message\":\"request\""),
        "RUST_LOG=warn still logged the per-request INFO event:\n{out}"
    );
}

#[test]
fn sign_reads_the_body_from_stdin_with_a_dash() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("listen: [{{ addr: \"127.0.0.1:1\" }}]\nroutes:\n  - {{ name: r, path: /r, upstream: \"http://127.0.0.1:2\", signature: {{ scheme: imggo, secrets: [\"{SECRET}\"] }} }}\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["sign", "-c"])
        .arg(&config)
        .args(["--route", "r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = br#"{"from":"stdin"}"#;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("X-ImgGo-Signature: {}", imggo_signature(body))
    );
}
