//! Test harness: the real `hookgate` binary on free ports with a generated config, a recording
//! upstream on an ephemeral port, and signing helpers written independently of hookgate's code.

use hmac::{Hmac, Mac};
use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SECRET: &str = "it-secret";

/// Ports the tests hand to the processes they start (gateways, private Redis and Postgres)
/// come from below the kernel's ephemeral range, so no outgoing connection's source port takes
/// one between our check and the process's bind. Each is reserved with a lock file held until
/// the test process ends, so tests running in parallel (nextest runs each in its own process)
/// never hand out the same port twice.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

static RESERVED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// A port reserved for this test process that nothing listens on right now.
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("hookgate-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let start = u64::from(std::process::id()) * 7919 + u64::from(nanos);
    for i in 0..u64::from(span) {
        let port = PORT_RANGE.start + ((start + i) % u64::from(span)) as u16;
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        // flock: released by the kernel when this process exits, however it exits.
        use std::os::fd::AsRawFd;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        // Free of other users (a leftover process, another program on the machine) too.
        if StdListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        RESERVED.lock().unwrap().push(file);
        return port;
    }
    panic!("no free port left in {PORT_RANGE:?}");
}

/// A port where a connection is refused for as long as the returned socket lives: bound, never
/// listening, so nothing else can take it meanwhile.
/// Whether something accepts connections on 127.0.0.1:`port` within `limit`, tried every 50 ms:
/// for the private servers the tests start.
pub fn listening_within(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

pub fn imggo_signature(body: &[u8]) -> String {
    imggo_signature_with(SECRET, body)
}

pub fn imggo_signature_with(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

pub fn delivery(event: &str, job: &str) -> Vec<u8> {
    let status = match event {
        "job.completed" => "completed",
        "job.failed" => "failed",
        _ => "queued",
    };
    let mut v = serde_json::json!({ "event": event, "job_id": job, "status": status });
    if event == "job.completed" {
        v["result"] =
            serde_json::json!({ "url": "https://cdn.example/out.png", "width": 10, "height": 10 });
    }
    if event == "job.failed" {
        v["error"] = serde_json::json!({ "code": "E1", "message": "boom" });
    }
    serde_json::to_vec(&v).unwrap()
}

// ---------------------------------------------------------------- recording upstream

#[derive(Debug, Clone)]
pub struct Received {
    /// When the request's body had fully arrived.
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the upstream answers: scripted answers first, then the default.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    /// Bodies containing the text get the status, before the script or the default.
    failing: Failing,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// An upstream on `addr` (an app coming back on its old address).
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::serve_on(TcpListener::bind(addr).await.unwrap())
    }

    /// An upstream listening on a socket of [`refused_port`]: the app coming up on the port
    /// that refused until now, with no moment when another process could take it.
    pub fn start_on_reserved(socket: tokio::net::TcpSocket) -> Self {
        Self::serve_on(socket.listen(1024).unwrap())
    }

    fn serve_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let up = Upstream {
            addr,
            received: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(Reply {
                status: 200,
                delay: Duration::ZERO,
                retry_after: None,
            })),
            failing: Arc::default(),
        };
        let (received, script, default, failing) = (
            up.received.clone(),
            up.script.clone(),
            up.default.clone(),
            up.failing.clone(),
        );
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let replies = Replies {
                    script: script.clone(),
                    default: default.clone(),
                    failing: failing.clone(),
                };
                tokio::spawn(serve(sock, received.clone(), replies));
            }
        });
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn then(&self, status: u16, delay: Duration) {
        self.script.lock().unwrap().push_back(Reply {
            status,
            delay,
            retry_after: None,
        });
    }

    /// The next answer is `status` with `Retry-After: secs`.
    pub fn then_retry_after(&self, status: u16, secs: u64) {
        self.script.lock().unwrap().push_back(Reply {
            status,
            delay: Duration::ZERO,
            retry_after: Some(secs),
        });
    }

    pub fn always(&self, status: u16, delay: Duration) {
        *self.default.lock().unwrap() = Reply {
            status,
            delay,
            retry_after: None,
        };
    }

    /// Every request whose body contains `text` is answered `status` (until [`Upstream::heal`]),
    /// with the default answer's delay.
    pub fn fail_when(&self, text: &str, status: u16) {
        self.failing
            .lock()
            .unwrap()
            .push((text.as_bytes().to_vec(), status));
    }

    /// Forgets every `fail_when`.
    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }

    /// What was received with this header value (e.g. a `Hookgate-Delivery-Id`).
    pub fn received_with(&self, name: &str, value: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.header(name) == Some(value))
            .collect()
    }
}

/// Texts whose bodies get a status of their own (`Upstream::fail_when`).
type Failing = Arc<Mutex<Vec<(Vec<u8>, u16)>>>;

/// How one connection of the upstream picks its answers.
struct Replies {
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    failing: Failing,
}

impl Replies {
    fn next(&self, body: &[u8]) -> Reply {
        let default = self.default.lock().unwrap().clone();
        let failing = self.failing.lock().unwrap();
        if let Some((_, status)) = failing
            .iter()
            .find(|(text, _)| body.windows(text.len()).any(|w| w == text.as_slice()))
        {
            return Reply {
                status: *status,
                ..default
            };
        }
        self.script.lock().unwrap().pop_front().unwrap_or(default)
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    replies: Replies,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 65536];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..head_end]).is_err() {
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let target = req.path.unwrap_or("").to_string();
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end);
        while buf.len() < len {
            let mut chunk = [0u8; 65536];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let reply = replies.next(&body);
        received.lock().unwrap().push(Received {
            at: Instant::now(),
            method,
            target,
            headers,
            body,
        });
        tokio::time::sleep(reply.delay).await;
        let out = format!("{{\"upstream_status\":{}}}", reply.status);
        let retry_after = reply
            .retry_after
            .map_or_else(String::new, |s| format!("Retry-After: {s}\r\n"));
        let resp = format!(
            "HTTP/1.1 {} Answer\r\nContent-Type: application/json\r\nX-Upstream: recorded\r\n{retry_after}Content-Length: {}\r\n\r\n{}",
            reply.status,
            out.len(),
            out
        );
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- a private Redis

/// A private redis-server on a free port, killed on drop (outage tests stop and restart it).
pub struct PrivateRedis {
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start_on(port: u16) -> Self {
        Self::start(&["--port".into(), port.to_string()], || redis_answers(port))
    }

    /// Speaking only TLS on `port` with `cert` and `key` (the certificate is its own CA; clients
    /// are not asked for one). Ready when it accepts connections.
    pub fn start_tls_on(port: u16, cert: &Path, key: &Path) -> Self {
        let args = [
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start(&args, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    fn start(listen: &[String], ready: impl Fn() -> bool) -> Self {
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh)");
        let redis = PrivateRedis { child: Some(child) };
        // Ready when it answers (it accepts connections before it has loaded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis-server {listen:?} was not ready within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// True when a Redis server on `port` answers `PING` with `+PONG`.
pub fn redis_answers(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// The machine's shared Redis, which the Redis store tests use: a clear failure when it is down
/// instead of a gateway that never becomes ready.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

pub fn require_shared_redis() {
    assert!(
        redis_answers(6379),
        "the Redis on 127.0.0.1:6379 does not answer PING; start it (scripts/test.sh does)"
    );
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- the gateway process

pub struct Gateway {
    child: Child,
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub http: u16,
    pub https: u16,
    pub admin: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateways' worker threads: 2, or `HOOKGATE_TEST_THREADS` to run the suite on another
/// count (on 1, hookgate serves with tokio's single-threaded scheduler instead of work stealing).
fn test_threads() -> String {
    std::env::var("HOOKGATE_TEST_THREADS").unwrap_or_else(|_| "2".to_string())
}

/// The listener/admin head of a test config; `routes` and anything else is appended.
pub fn config_head(http: u16, https: u16, admin: u16) -> String {
    let threads = test_threads();
    format!(
        r#"listen:
  - addr: "127.0.0.1:{http}"
  - addr: "127.0.0.1:{https}"
    tls: {{ self_signed: true }}
threads: {threads}
client_timeout: 2s
grace_period: 1s
upgrade_socket: UPGRADE_SOCK
admin:
  addr: "127.0.0.1:{admin}"
"#
    )
}

/// An ImgGo route in the style of the example config, as YAML list items under `routes:`.
pub fn imggo_route(name: &str, path: &str, upstream: &str, extra: &str) -> String {
    ImggoRoute::new(name, path, upstream).with(extra).yaml()
}

/// A test route's settings, rendered to the YAML a user would write.
#[derive(Clone)]
pub struct ImggoRoute {
    name: String,
    path: String,
    upstream: String,
    https_only: bool,
    max_body: String,
    secret: String,
    otherwise: Option<String>,
    lease: Option<String>,
    ttl: Option<String>,
    extra: String,
}

impl ImggoRoute {
    pub fn new(name: &str, path: &str, upstream: &str) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            upstream: upstream.into(),
            https_only: false,
            max_body: "256KiB".into(),
            secret: SECRET.into(),
            otherwise: None,
            lease: None,
            ttl: None,
            extra: String::new(),
        }
    }

    pub fn https_only(mut self) -> Self {
        self.https_only = true;
        self
    }

    pub fn max_body(mut self, size: &str) -> Self {
        self.max_body = size.into();
        self
    }

    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.into();
        self
    }

    /// `events.otherwise`: `ignore` (the default) or `reject`.
    pub fn otherwise(mut self, what: &str) -> Self {
        self.otherwise = Some(what.into());
        self
    }

    /// `idempotency.ttl`.
    pub fn ttl(mut self, ttl: &str) -> Self {
        self.ttl = Some(ttl.into());
        self
    }

    /// `idempotency.lease`.
    pub fn lease(mut self, lease: &str) -> Self {
        self.lease = Some(lease.into());
        self
    }

    /// More keys of the route, as YAML lines indented by four spaces.
    pub fn with(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self
    }

    pub fn yaml(&self) -> String {
        let Self {
            name,
            path,
            upstream,
            https_only,
            max_body,
            secret,
            otherwise,
            lease,
            ttl,
            extra,
        } = self;
        let otherwise = otherwise
            .as_ref()
            .map_or(String::new(), |o| format!(", otherwise: {o}"));
        let lease = lease
            .as_ref()
            .map_or(String::new(), |l| format!(", lease: {l}"))
            + &ttl
                .as_ref()
                .map_or(String::new(), |t| format!(", ttl: {t}"));
        format!(
            r#"  - name: {name}
    path: {path}
    upstream: "{upstream}"
    https_only: {https_only}
    max_body: {max_body}
    signature: {{ scheme: imggo, secrets: ["{secret}"] }}
    schema: SCHEMA
    events: {{ pointer: /event, allow: [job.completed, job.failed]{otherwise} }}
    idempotency: {{ key: ["/event", "/job_id"]{lease} }}
{extra}"#
        )
    }
}

/// Panics unless PRODUCT.md's metrics table lists `name` (a histogram's `_count`, `_sum` and
/// `_bucket` series by the histogram's name).
fn assert_documented_metric(name: &str) {
    static PRODUCT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PRODUCT.md")).unwrap()
    });
    let family = ["_count", "_sum", "_bucket"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|f| PRODUCT.contains(&format!("| `{f}` (histogram")))
        .unwrap_or(name);
    assert!(
        PRODUCT.contains(&format!("| `{family}`")),
        "{name} is not a metric of PRODUCT.md §7"
    );
}

/// A test config: the harness's listener head (plus `listeners`), then `body`, with the
/// placeholders for the upgrade socket (in `dir`) and the ImgGo schema filled in.
fn render_config(dir: &Path, ports: (u16, u16, u16), listeners: &str, body: &str) -> String {
    let (http, https, admin) = ports;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/schemas/imggo-webhook.json");
    let threads = format!("threads: {}\n", test_threads());
    let head = config_head(http, https, admin).replace(&threads, &format!("{listeners}{threads}"));
    format!("{head}{body}")
        .replace("UPGRADE_SOCK", &dir.join("upgrade.sock").to_string_lossy())
        .replace("SCHEMA", &schema.to_string_lossy())
}

impl Gateway {
    /// Starts hookgate with one ImgGo route `imggo` on `/webhooks/imggo` in front of `up`.
    pub async fn imggo(up: &Upstream) -> Gateway {
        Gateway::start(&format!(
            "routes:\n{}",
            imggo_route("imggo", "/webhooks/imggo", &up.url(), "")
        ))
        .await
    }

    /// Starts hookgate with `body` (everything after the listener head: store, routes, ...).
    pub async fn start(body: &str) -> Gateway {
        Self::start_with_env(body, &[]).await
    }

    /// Starts hookgate with `listeners` (YAML list items) added to the harness's two.
    pub async fn start_with_listeners(listeners: &str, body: &str) -> Gateway {
        Self::start_full(listeners, body, &[]).await
    }

    pub async fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_full("", body, env).await
    }

    /// Starts hookgate with `body` on one worker thread (`threads: 1`), whatever the suite's
    /// count.
    pub async fn start_on_one_thread(body: &str) -> Gateway {
        Self::start_threads("", body, &[], Some(1)).await
    }

    async fn start_full(listeners: &str, body: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_threads(listeners, body, env, None).await
    }

    async fn start_threads(
        listeners: &str,
        body: &str,
        env: &[(&str, &str)],
        threads: Option<usize>,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (http, https, admin) = (free_port(), free_port(), free_port());
        let mut text = render_config(dir.path(), (http, https, admin), listeners, body);
        if let Some(n) = threads {
            let suite = format!("threads: {}\n", test_threads());
            assert!(text.contains(&suite), "no thread count to set in:\n{text}");
            text = text.replace(&suite, &format!("threads: {n}\n"));
        }
        let config = dir.path().join("hookgate.yaml");
        std::fs::write(&config, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(&config, dir.path(), &env);
        let mut gw = Gateway {
            child,
            env,
            dir,
            config,
            http,
            https,
            admin,
        };
        gw.wait_healthy().await;
        gw
    }

    /// kill -9: no shutdown, no flush, nothing but what is on disk survives.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the gateway with SIGKILL and starts it again on the same config and ports.
    pub async fn restart(&mut self) {
        self.kill9();
        self.start_again().await;
    }

    /// Starts the gateway again on the same config and ports, after it stopped.
    pub async fn start_again(&mut self) {
        self.child = spawn(&self.config, self.dir.path(), &self.env);
        self.wait_healthy().await;
    }

    /// SIGTERM, and waits (off the runtime) until the process has exited.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 15 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// Waits for /readyz: the store answers (a Redis or Postgres store connects in the
    /// background after the listeners are up).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = reqwest::get(self.admin_url("/readyz"))
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for /healthz and the webhook listener, failing at once with the gateway's log when
    /// the process exits (a config error, a port taken) and after 60 s on a machine too loaded to
    /// start it.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            let ok = client
                .get(format!("http://127.0.0.1:{}/healthz", self.admin))
                .send()
                .await
                .is_ok();
            // The webhook listener must be up too, not only the admin one.
            if ok
                && tokio::net::TcpStream::connect(("127.0.0.1", self.http))
                    .await
                    .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gateway exited ({status}) before it was healthy:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not become healthy within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The upgraded (new) process's log once it holds `needle` (its lines are written out every
    /// 20 ms), or whatever it holds after 10 s.
    pub async fn upgraded_log_containing(&self, needle: &str) -> String {
        let path = self.dir.path().join("gateway-new.log");
        file_once_it_holds(&path, needle, Duration::from_secs(10))
            .await
            .unwrap_or_else(|log| log)
    }

    /// Starts a second hookgate on the same config with `--upgrade` (it waits for the listening
    /// sockets on the upgrade socket), then tells this one to hand them over (SIGQUIT).
    /// Returns when the old process has handed over and exited.
    pub async fn upgrade(&mut self) -> tokio::task::JoinHandle<()> {
        let log = std::fs::File::create(self.dir.path().join("gateway-new.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        cmd.args(["--log-format", "json", "run", "--upgrade", "-c"])
            .arg(&self.config);
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        let new = cmd.spawn().unwrap();
        // The old one lets go once the new one waits on the upgrade socket (it binds the socket
        // right after saying so; the old one retries for a few seconds if it is early).
        let new_log = self.dir.path().join("gateway-new.log");
        file_once_it_holds(
            &new_log,
            "waiting for the listening sockets",
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|log| panic!("the new process never reached the upgrade socket:\n{log}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let mut old = std::mem::replace(&mut self.child, new);
        tokio::task::spawn_blocking(move || {
            let _ = old.wait();
        })
    }

    /// What the gateway has written to its log so far. It writes its lines out every 20 ms:
    /// a line logged a moment ago may not be there yet (see [`Gateway::settled_log`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The log once every line logged before this call is in it: a request with a fresh id
    /// goes to a path no route serves, and lines are written in order, so the log is read once
    /// that request's line is there.
    pub async fn settled_log(&self) -> String {
        let marker = format!("settled-{:016x}", rand_u64());
        let _ = client()
            .get(self.http_url("/hookgate-test-settled"))
            .header("X-Request-Id", &marker)
            .send()
            .await;
        let path = self.dir.path().join("gateway.log");
        file_once_it_holds(&path, &marker, Duration::from_secs(10))
            .await
            .unwrap_or_else(|log| panic!("the log never showed {marker}:\n{log}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line, e.g. `hookgate_requests_total{outcome="forwarded",route="a"}`;
    /// 0 when no such series was exported yet (a counter that never counted). The name must be one
    /// that PRODUCT.md §7 lists, so a misspelt or renamed metric fails rather than reading 0.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).await.unwrap_or(0.0)
    }

    /// The value of one sample line, `None` when the gateway does not export it: for gauges that
    /// must be there (`Some(0.0)` is "exported and zero").
    pub async fn series(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        assert_documented_metric(name);
        let text = self.metrics().await;
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .find(|l| {
                let Some(rest) = l.strip_prefix(name) else {
                    return false;
                };
                (rest.starts_with('{') || rest.starts_with(' '))
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Rewrites the config file (for reload tests).
    pub fn rewrite(&self, body: &str) {
        let ports = (self.http, self.https, self.admin);
        let text = render_config(self.dir.path(), ports, "", body);
        let mut f = std::fs::File::create(&self.config).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// Starts the binary on `config`, its output appended to `dir`/gateway.log.
fn spawn(config: &Path, dir: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(["--log-format", "json", "run", "-c"]).arg(config);
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The file's text once it holds `needle` (read every 10 ms, at most `limit`); otherwise what it
/// held at the end, as the error.
pub async fn file_once_it_holds(
    path: &Path,
    needle: &str,
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(text);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The JSON at `url` (sent with `token`) once `done` holds for it, read every 20 ms for at most
/// 10 s; the last answer either way. For the delivery log: an attempt's outcome is recorded
/// after the app answered and its metrics counted it, so the log shows it a moment later.
pub async fn json_once(
    url: &str,
    token: Option<&str>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut req = client().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let json: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
        if done(&json) || Instant::now() >= deadline {
            return json;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `hookgate check` on a config written from `text`: its exit code and what it printed
/// (stdout, then stderr).
pub fn check_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookgate.yaml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Sends the gateway SIGHUP: reload its config.
pub fn hup(gw: &Gateway) {
    std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
}

/// POSTs to the admin API (with the bearer token, if any): its status and JSON.
pub async fn admin_post(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().post(gw.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// POSTs an ImgGo-signed body.
pub async fn post_signed(url: &str, body: &[u8]) -> reqwest::Response {
    client()
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-ImgGo-Signature", imggo_signature(body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// `(status, error code or status field, full JSON)` of an answer.
pub async fn answer(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let code = json["error"]["code"]
        .as_str()
        .or(json["status"].as_str())
        .unwrap_or("")
        .to_string();
    (status, code, json)
}

/// Kill -9 rounds: in each of `rounds`, signed deliveries stream into `path` (job ids
/// `k{round}-{i}`, at most `per_round`) while the gateway is killed and started again at a moment
/// that varies per round. Returns the ids of the deliveries it accepted, and how many rounds' streams
/// the kill cut (a refused connection rather than the stream's end).
pub async fn accepted_across_kill_9(
    gw: &mut Gateway,
    path: &str,
    rounds: u64,
    per_round: usize,
) -> (Vec<String>, usize) {
    let (mut accepted, mut cut) = (Vec::new(), 0);
    for round in 0..rounds {
        let url = gw.http_url(path);
        let sender = tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..per_round {
                let body = delivery("job.completed", &format!("k{round}-{i}"));
                match client()
                    .post(&url)
                    .header("X-ImgGo-Signature", imggo_signature(&body))
                    .body(body)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let (status, _, json) = answer(resp).await;
                        if status == 200 {
                            got.push(json["delivery_id"].as_str().unwrap().to_string());
                        }
                    }
                    Err(_) => return (got, true),
                }
            }
            (got, false)
        });
        tokio::time::sleep(Duration::from_millis(60 + 70 * round)).await;
        gw.restart().await;
        let (got, was_cut) = sender.await.unwrap();
        cut += usize::from(was_cut);
        accepted.extend(got);
    }
    (accepted, cut)
}

/// Waits until the gateway has counted a reload with `result` (`ok` or `error`).
pub async fn reload_counted(gw: &Gateway, result: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .metric("hookgate_config_reloads_total", &[("result", result)])
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no reload counted {result}:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` until true or the deadline.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), cond).await;
}

/// Polls `cond` until true or `limit` has passed.
pub async fn eventually_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw HTTP/1.1 exchange over plain TCP: writes `parts` in order (with `pause` between them)
/// and returns everything the gateway sent until it closed or went quiet.
pub async fn raw_exchange(port: u16, parts: &[&[u8]], pause: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    read_until_quiet(&mut s, Duration::from_secs(5)).await
}

/// Writes `raw` and reads everything the gateway sends until it closes the connection, which
/// it must do within 5 s (the "then close" of PRODUCT.md §3's malformed requests).
pub async fn exchange_until_closed(port: u16, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the gateway did not close the connection; it sent:\n{}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn read_until_quiet(s: &mut tokio::net::TcpStream, quiet: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
        // A complete answer with a JSON body has arrived: stop waiting.
        let text = String::from_utf8_lossy(&out);
        if let Some(i) = text.find("\r\n\r\n") {
            let head = &text[..i].to_ascii_lowercase();
            if head.starts_with("http/1.1 100") && text.ends_with("\r\n\r\n") {
                break;
            }
            if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                let n: usize = cl.trim().parse().unwrap_or(0);
                if text.len() >= i + 4 + n && !head.starts_with("http/1.1 100") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- Postgres

fn psql(port: u16, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        .output()
        .expect("psql must be installed (scripts/setup.sh)")
}

/// A database of the test's own, dropped afterwards.
pub struct TestDatabase {
    pub name: String,
    port: u16,
}

impl TestDatabase {
    pub fn create() -> Self {
        Self::create_on(5432)
    }

    pub fn create_on(port: u16) -> Self {
        let name = format!("hookgate_it_{:016x}", rand_u64());
        let out = psql(port, &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "PostgreSQL on 127.0.0.1:{port} must answer (user postgres, trust auth): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestDatabase { name, port }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    /// One value of a query against this database.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                &self.name,
            ])
            .args(["-qAt", "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = psql(
            self.port,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A private PostgreSQL server (initdb + pg_ctl as the `postgres` user, which they require) on a
/// port of its own, so a test can stop and start it; removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    running: bool,
    /// Server options beyond the port and socket (TLS).
    options: String,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin");
    let program = bin.join(args[0]);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(&args[1..]).output().unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that speaks only TLS over TCP, with `cert` and `key`: `hostssl` is the only
    /// TCP rule of its pg_hba.conf, so a client that does not encrypt is refused.
    pub fn start_with_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hookgate-pg-{port}-{:x}", rand_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        let out = as_postgres(&[
            "initdb",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-D",
            data.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut options = String::new();
        if let Some((cert, key)) = tls {
            let (own_cert, own_key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::copy(cert, &own_cert).unwrap();
            std::fs::copy(key, &own_key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&own_key, std::fs::Permissions::from_mode(0o600)).unwrap();
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&own_cert)
                .arg(&own_key)
                .status()
                .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                own_cert.display(),
                own_key.display()
            );
        }
        let mut pg = PrivatePostgres {
            port,
            dir,
            running: false,
            options,
        };
        pg.resume();
        pg
    }

    /// Starts (again) and waits until it accepts queries.
    pub fn resume(&mut self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.display(),
            self.options
        );
        let out = as_postgres(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    /// Stops at once, as a crash or an outage would.
    pub fn stop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- certificates

/// A self-signed certificate and key for localhost with `cn`, written to `dir`.
pub fn make_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    make_cert_for(dir, cn, "DNS:localhost,IP:127.0.0.1")
}

/// A self-signed certificate and key with `cn` and the subject alternative names `san`
/// (`DNS:name,IP:address`), written to `dir`.
pub fn make_cert_for(dir: &Path, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
            // A server's certificate, not a CA's: rustls (as the Web PKI rules say) refuses
            // a CA certificate as the end of a chain, which `req -x509` makes by default.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
