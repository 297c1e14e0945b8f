//! PRODUCT.md §8: SIGHUP reload swaps the config for new requests; an invalid file is refused.

use crate::harness::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let up = Upstream::start().await;
    let route = ImggoRoute::new("imggo", "/webhooks/imggo", &up.url());
    let gw = Gateway::start(&format!("routes:\n{}", route.yaml())).await;
    let url = gw.http_url("/webhooks/imggo");
    let send = |secret: &'static str, job: &'static str| {
        let url = url.clone();
        async move {
            let body = delivery("job.completed", job);
            client()
                .post(url)
                .header("X-ImgGo-Signature", imggo_signature_with(secret, &body))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(SECRET, "r1").await, 200);

    // Rotate the secret and add a route.
    let rotated = route.secret("rotated-secret").yaml();
    gw.rewrite(&format!(
        "routes:\n{rotated}{}",
        imggo_route("new", "/webhooks/new", &up.url(), "")
    ));
    hup(&gw);
    reload_counted(&gw, "ok").await;
    assert_eq!(send("rotated-secret", "r2").await, 200);
    assert_eq!(send(SECRET, "r3").await, 401, "the old secret is gone");
    let body = delivery("job.completed", "r4");
    let new_route = client()
        .post(gw.http_url("/webhooks/new"))
        .header("X-ImgGo-Signature", imggo_signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(new_route.status(), 200);

    // An invalid file is refused; the previous config keeps serving.
    gw.rewrite("routes:\n  - name: broken\n    path: no-slash\n    upstream: nowhere\n");
    hup(&gw);
    reload_counted(&gw, "error").await;
    assert_eq!(send("rotated-secret", "r5").await, 200);
    assert!(gw.settled_log().await.contains("config reload refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_removed_by_reload_stops_answering_while_its_request_in_flight_finishes() {
    let up = Upstream::start().await;
    let keep = imggo_route("keep", "/webhooks/keep", &up.url(), "");
    let gone = imggo_route("gone", "/webhooks/gone", &up.url(), "");
    let gw = Gateway::start(&format!("routes:\n{keep}{gone}")).await;
    up.then(200, std::time::Duration::from_millis(1500));
    let url = gw.http_url("/webhooks/gone");
    let in_flight = tokio::spawn(async move {
        post_signed(&url, &delivery("job.completed", "slow"))
            .await
            .status()
            .as_u16()
    });
    eventually("the request at the app", || up.count() == 1).await;

    gw.rewrite(&format!("routes:\n{keep}"));
    hup(&gw);
    reload_counted(&gw, "ok").await;
    assert!(
        !in_flight.is_finished(),
        "the reload came only after the request had finished"
    );
    let (status, code, _) = answer(
        post_signed(
            &gw.http_url("/webhooks/gone"),
            &delivery("job.completed", "after"),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "route_not_found"));
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the request in flight finished"
    );
    assert_eq!(up.count(), 1);
}

#[test]
fn the_default_upgrade_socket_lives_in_a_directory_only_we_may_enter() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    // No upgrade_socket: the default one is used.
    std::fs::write(
        &config,
        format!(
            "listen: [{{ addr: \"127.0.0.1:{}\" }}]\ngrace_period: 1s\nroutes:\n  - {{ name: r, path: /r, upstream: \"http://127.0.0.1:9\" }}\n",
            free_port()
        ),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "-c"])
            .arg(&config)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let private = runtime.path().join("hookgate");
    let mut child = run();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !private.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no upgrade socket directory made"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let _ = child.kill();
    let _ = child.wait();

    // A directory others may enter is refused, not used.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upgrade_socket directory") && err.contains("0700"),
        "{err}"
    );
}

/// The subject of the certificate a new handshake on `port` is given.
fn served_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What `openssl s_client` negotiates with `port` when it offers `args`.
fn negotiated(port: u16, args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost {args} </dev/null 2>&1"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_server_picks_aes_128_gcm_and_refuses_anything_older_than_tls_1_2() {
    let up = Upstream::start().await;
    let gw = Gateway::imggo(&up).await;
    // OpenSSL clients ask for AES-256-GCM first; the server's order wins.
    let tls13 = negotiated(
        gw.https,
        "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
    );
    assert!(
        tls13.contains("TLSv1.3") && tls13.contains("TLS_AES_128_GCM_SHA256"),
        "{tls13}"
    );
    // A client that offers only AES-256 still gets it.
    let only256 = negotiated(gw.https, "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384");
    assert!(only256.contains("TLS_AES_256_GCM_SHA384"), "{only256}");
    let tls12 = negotiated(gw.https, "-tls1_2");
    assert!(tls12.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{tls12}");
    // No CBC suite, and nothing before TLS 1.2: the server answers with an alert.
    let cbc = negotiated(gw.https, "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256");
    assert!(
        cbc.contains("alert") && cbc.contains("Cipher is (NONE)"),
        "{cbc}"
    );
    let tls11 = negotiated(gw.https, "-tls1_1");
    assert!(
        tls11.contains("alert") && tls11.contains("Cipher is (NONE)"),
        "{tls11}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rotates_the_certificate_for_new_handshakes_and_refuses_a_bad_pair() {
    let up = Upstream::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = make_cert(certs.path(), "first");
    let (second_cert, second_key) = make_cert(certs.path(), "second");
    let live_cert = certs.path().join("tls.crt");
    let live_key = certs.path().join("tls.key");
    std::fs::copy(&first_cert, &live_cert).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let port = free_port();
    let listener = format!(
        "  - addr: \"127.0.0.1:{port}\"\n    tls: {{ cert: {}, key: {} }}\n",
        live_cert.display(),
        live_key.display()
    );
    let routes = format!(
        "routes:\n{}",
        imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
    );
    let gw = Gateway::start_with_listeners(&listener, &routes).await;
    assert!(
        served_subject(port).contains("CN = first"),
        "{}",
        served_subject(port)
    );

    // A connection opened before the rotation keeps working after it.
    let keep = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/webhooks/imggo");
    let send = |c: &reqwest::Client, job: &str| {
        let body = delivery("job.completed", job);
        c.post(&url)
            .header("X-ImgGo-Signature", imggo_signature(&body))
            .body(body)
            .send()
    };
    assert_eq!(send(&keep, "rot1").await.unwrap().status(), 200);

    std::fs::copy(&second_cert, &live_cert).unwrap();
    std::fs::copy(&second_key, &live_key).unwrap();
    hup(&gw);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !served_subject(port).contains("CN = second") {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        send(&keep, "rot2").await.unwrap().status(),
        200,
        "the open connection broke"
    );

    // A key that does not belong to the certificate is refused; the second pair keeps serving.
    std::fs::copy(&first_key, &live_key).unwrap();
    hup(&gw);
    // Judged once the reload was decided: the log says it was refused.
    eventually("the refusal in the log", || {
        gw.log().contains("certificate reload refused")
    })
    .await;
    assert!(served_subject(port).contains("CN = second"));
    assert_eq!(up.count(), 2);
}
