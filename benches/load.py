#!/usr/bin/env python3
"""Orchestrates benches/load.sh: starts every target, runs wrk rounds alternately, reports."""
import base64
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CONNS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
SECRET = "bench-secret"
REL = "target/release"
tmp = tempfile.mkdtemp(prefix="hookgate-load-")
procs = []


handed_out = set()


def free_port():
    """A port nothing listens on and not handed out before: the kernel may offer a closed probe's
    port again, and two gateways given the same one would both listen on it (Pingora sets
    SO_REUSEPORT) and split its connections between them."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in handed_out:
            handed_out.add(port)
            return port


def start(cmd, env=None, log="/dev/null"):
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=open(log, "w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


NATS = ("127.0.0.1", 4222)
NATS_STREAM = f"HOOKGATE_LOAD_{os.getpid()}"
NATS_SUBJECT = f"hookgate.load.{os.getpid()}"


def jetstream_api(verb, body=b""):
    """One JetStream API request on the machine's NATS over its text protocol (no client library
    needed here): `verb` is e.g. STREAM.CREATE.<name>; returns the JSON answer."""
    import json
    s = socket.create_connection(NATS, 5)
    try:
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.load 1\r\n'
                  + f"PUB $JS.API.{verb} _INBOX.load {len(body)}\r\n".encode() + body + b"\r\n")
        data = b""
        while True:
            m = re.search(rb"MSG _INBOX\.load 1 (\d+)\r\n", data)
            if m and len(data) >= m.end() + int(m.group(1)):
                return json.loads(data[m.end():m.end() + int(m.group(1))])
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"NATS closed during {verb}")
            data += chunk
    finally:
        s.close()


def cpu_seconds(session):
    """CPU time (user + system) used so far by every process of a target's session."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(url):
    """CPU time used so far by the Postgres server at `url` when it runs on this machine: the
    postmaster's, its live children's, and its exited children's (the postmaster's cutime/cstime). None when its postmaster.pid cannot be read (a remote server)."""
    out = subprocess.run(["psql", f"{url}/postgres", "-qAtc", "show data_directory"],
                         capture_output=True, text=True).stdout.strip()
    try:
        postmaster = int(open(os.path.join(out, "postmaster.pid")).readline())
        fields = open(f"/proc/{postmaster}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    # Its children each call setsid(), so they are found by their parent, not by a session.
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # own + exited children
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            child = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == postmaster:  # ppid
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


ports = {k: free_port() for k in ("upstream", "nginx", "haproxy", "pingora", "pingora-hyper", "hookgate", "admin", "hookgate-redis", "admin-redis",
                                  "hookgate-queue", "admin-queue", "hookgate-base", "admin-base",
                                  "hookgate-pg", "admin-hookgate-pg", "hookgate-queue-pg", "admin-hookgate-queue-pg",
                                  "qhook", "qhook-pg", "hookgate-queue-nats", "admin-queue-nats")}
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
upstream = f"127.0.0.1:{ports['upstream']}"
try:
    sessions = {}
    sessions["upstream"] = start([f"{REL}/examples/bench_upstream", upstream, "1"]).pid
    wait_port(ports["upstream"])

    nginx_conf = os.path.join(tmp, "nginx.conf")
    open(nginx_conf, "w").write(f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log /dev/null;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream app {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{ports['nginx']};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}""")
    sessions["nginx"] = start(["nginx", "-c", nginx_conf]).pid
    wait_port(ports["nginx"])

    # HAProxy doing the checks its configuration language can: allowlist, HMAC-SHA256 of the
    # buffered body, the required fields and the event (json_query), and a dedupe stick table
    # (no release on failure, no schema types, no constant-time comparison).
    haproxy_conf = os.path.join(tmp, "haproxy.cfg")
    key_b64 = base64.b64encode(SECRET.encode()).decode()
    open(haproxy_conf, "w").write(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
backend dedupe
  stick-table type string len 160 size 4m expire 24h store gpc0
backend app
  server app {upstream}
frontend webhooks
  bind 127.0.0.1:{ports['haproxy']}
  option http-buffer-request
  http-request deny deny_status 403 unless {{ src 127.0.0.0/8 }}
  http-request set-var(txn.mac) req.body,hmac(sha256,{key_b64}),hex,lower
  http-request set-var(txn.sig) req.hdr(x-imggo-signature),lower
  http-request deny deny_status 401 unless {{ var(txn.mac),strcmp(txn.sig) eq 0 }}
  http-request set-var(txn.event) req.body,json_query('$.event')
  http-request set-var(txn.job) req.body,json_query('$.job_id')
  http-request set-var(txn.status) req.body,json_query('$.status')
  http-request deny deny_status 422 unless {{ var(txn.job) -m found }} {{ var(txn.status) -m found }}
  http-request return status 200 content-type application/json string '{{"status":"ignored"}}' unless {{ var(txn.event) -m str job.completed job.failed }}
  http-request set-var(txn.key) var(txn.event),concat(:,txn.job)
  http-request track-sc0 var(txn.key) table dedupe
  http-request return status 200 content-type application/json string '{{"status":"already_processed"}}' if {{ sc_get_gpc0(0) gt 0 }}
  http-request sc-inc-gpc0(0)
  default_backend app
""")
    subprocess.run(["haproxy", "-c", "-q", "-f", haproxy_conf], check=True)
    sessions["haproxy"] = start(["haproxy", "-db", "-f", haproxy_conf]).pid
    wait_port(ports["haproxy"])

    sessions["pingora"] = start([f"{REL}/examples/passthrough", f"127.0.0.1:{ports['pingora']}", upstream, "1"]).pid
    wait_port(ports["pingora"])
    sessions["pingora-hyper"] = start([f"{REL}/examples/hyper_passthrough", f"127.0.0.1:{ports['pingora-hyper']}",
                                       upstream, "1"]).pid
    wait_port(ports["pingora-hyper"])

    schema = os.path.abspath("config/schemas/imggo-webhook.json")
    config = os.path.join(tmp, "hookgate.yaml")
    open(config, "w").write(f"""
listen: [{{ addr: "127.0.0.1:{ports['hookgate']}" }}]
threads: 1
grace_period: 1s
upgrade_socket: {tmp}/upgrade.sock
admin: {{ addr: "127.0.0.1:{ports['admin']}" }}
store: {{ url: memory, max_keys: 2000000 }}
routes:
  - name: imggo
    path: /webhooks/imggo
    upstream: "http://{upstream}"
    https_only: false
    allow_ips: ["127.0.0.0/8"]
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema: {schema}
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}   # production default ttl (24h)
""")
    sessions["hookgate"] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", config],
                                 env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
    wait_port(ports["hookgate"])

    # An A/B in one run: HOOKGATE_BASELINE=path/to/an/older/hookgate adds it as `hookgate-base`,
    # same config, so a change's cost is measured against its parent on the same machine.
    BASELINE = os.environ.get("HOOKGATE_BASELINE")
    if BASELINE:
        base_config = os.path.join(tmp, "hookgate-base.yaml")
        text = open(config).read()
        text = text.replace(f"127.0.0.1:{ports['hookgate']}", f"127.0.0.1:{ports['hookgate-base']}")
        text = text.replace(f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{ports['admin-base']}")
        text = text.replace("upgrade.sock", "upgrade-base.sock")
        open(base_config, "w").write(text)
        sessions["hookgate-base"] = start([BASELINE, "--log-format", "json", "run", "-c", base_config],
                                          env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
        wait_port(ports["hookgate-base"])

    # The same gateway with the shared Redis store (what replicas use), for the Redis/memory ratio.
    redis_config = os.path.join(tmp, "hookgate-redis.yaml")
    text = open(config).read()
    text = text.replace(f"127.0.0.1:{ports['hookgate']}", f"127.0.0.1:{ports['hookgate-redis']}")
    text = text.replace(f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{ports['admin-redis']}")
    text = text.replace("upgrade.sock", "upgrade-redis.sock")
    text = text.replace("store: {{ url: memory, max_keys: 2000000 }}".replace("{{", "{").replace("}}", "}"),
                        f'store: {{ url: "{REDIS}", prefix: "hookgate-load-{os.getpid()}" }}')
    open(redis_config, "w").write(text)
    sessions["hookgate-redis"] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", redis_config],
                                       env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
    wait_port(ports["hookgate-redis"])

    # The same checks on a queue route (file store, synced to disk before "queued"), delivering in
    # the background to the same app: acceptance and draining share the one thread.
    queue_config = os.path.join(tmp, "hookgate-queue.yaml")
    text = open(config).read()
    text = text.replace(f"127.0.0.1:{ports['hookgate']}", f"127.0.0.1:{ports['hookgate-queue']}")
    text = text.replace(f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{ports['admin-queue']}")
    text = text.replace("upgrade.sock", "upgrade-queue.sock")
    text = text.replace("store: { url: memory, max_keys: 2000000 }", f'store: {{ url: "file:{tmp}/queue.db" }}')
    text = text.replace(f'    upstream: "http://{upstream}"\n',
                        f'    mode: queue\n    upstreams: [{{ name: app, url: "http://{upstream}" }}]\n')
    open(queue_config, "w").write(text)
    sessions["hookgate-queue"] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", queue_config],
                                       env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
    wait_port(ports["hookgate-queue"])

    # The same queue route with one JetStream destination instead of the HTTP app (the machine's
    # NATS, a stream of this run's own): does the drain keep up at full acceptance load as the
    # HTTP one does?
    import json
    created = jetstream_api(f"STREAM.CREATE.{NATS_STREAM}", json.dumps({
        "name": NATS_STREAM, "subjects": [NATS_SUBJECT], "storage": "file",
        "max_msgs": 300000, "discard": "old", "duplicate_window": 120_000_000_000}).encode())
    if "error" in created:
        raise SystemExit(f"JetStream stream for the bench: {created['error']}")
    nats_config = os.path.join(tmp, "hookgate-queue-nats.yaml")
    text = open(queue_config).read()
    text = text.replace(f"127.0.0.1:{ports['hookgate-queue']}", f"127.0.0.1:{ports['hookgate-queue-nats']}")
    text = text.replace(f"127.0.0.1:{ports['admin-queue']}", f"127.0.0.1:{ports['admin-queue-nats']}")
    text = text.replace("upgrade-queue.sock", "upgrade-queue-nats.sock")
    text = text.replace(f"file:{tmp}/queue.db", f"file:{tmp}/queue-nats.db")
    text = text.replace(f'upstreams: [{{ name: app, url: "http://{upstream}" }}]',
                        f'upstreams: [{{ name: app, url: "nats://{NATS[0]}:{NATS[1]}", subject: "{NATS_SUBJECT}" }}]')
    open(nats_config, "w").write(text)
    sessions["hookgate-queue-nats"] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", nats_config],
                                            env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
    wait_port(ports["hookgate-queue-nats"])

    # Postgres, the store replicas share: a forward route (dedupe, vs Redis) and a queue route
    # (acceptance, vs the file store), on a database made for this run and dropped after it.
    PG = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432")
    pg_db = f"hookgate_load_{os.getpid()}"
    # A database each: the two routes share a name, so on one database the queue route would
    # answer the forward route's deliveries already_processed.
    for suffix in ("fwd", "queue"):
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"create database {pg_db}_{suffix}"], check=True)
    for name, source in (("hookgate-pg", config), ("hookgate-queue-pg", queue_config)):
        path = os.path.join(tmp, f"{name}.yaml")
        text = open(source).read()
        listen = ports["hookgate"] if source == config else ports["hookgate-queue"]
        admin_port = ports["admin"] if source == config else ports["admin-queue"]
        text = text.replace(f"127.0.0.1:{listen}", f"127.0.0.1:{ports[name]}")
        text = text.replace(f"127.0.0.1:{admin_port}", f"127.0.0.1:{ports['admin-' + name]}")
        text = re.sub(r"upgrade[-a-z]*\.sock", f"upgrade-{name}.sock", text)
        database = f"{pg_db}_fwd" if source == config else f"{pg_db}_queue"
        # Plain TCP to the database, as qhook and the Redis target get: without `sslmode`,
        # hookgate (like libpq) negotiates TLS with a server that offers it, which Debian's does.
        text = re.sub(r"store: \{[^\n]*\}", f'store: {{ url: "{PG}/{database}?sslmode=disable" }}', text)
        open(path, "w").write(text)
        sessions[name] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", path],
                               env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
        wait_port(ports[name])

    # qhook (verify, persist, answer, deliver with retries), the open-source tool of queue mode's
    # shape, when installed (`cargo install qhook`): on its SQLite default and on the same Postgres.
    # Its generic HMAC reads the same hex HMAC-SHA256 from X-Webhook-Signature.
    qhook_targets = []
    if shutil.which("qhook"):
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"create database {pg_db}_qhook"], check=True)
        for name, database in (("qhook", "driver: sqlite"),
                               ("qhook-pg", f"driver: postgres\n  url: {PG}/{pg_db}_qhook")):
            qdir = os.path.join(tmp, name)
            os.makedirs(qdir)
            open(os.path.join(qdir, "qhook.yaml"), "w").write(f"""
database:
  {database}
server:
  port: {ports[name]}
  allow_private_urls: true
  max_inbound: 10000
sources:
  imggo:
    type: webhook
    verify: hmac
    secret: {SECRET}
    allowed_ips: ["127.0.0.0/8"]
handlers:
  app:
    source: imggo
    url: http://{upstream}/webhooks/imggo
""")
            sessions[name] = subprocess.Popen(["qhook", "start"], cwd=qdir, stdout=open(os.path.join(qdir, "log"), "w"),
                                              stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(sessions[name])
            sessions[name] = sessions[name].pid
            wait_port(ports[name])
            qhook_targets.append(name)
    else:
        print("qhook is not installed (cargo install qhook): its targets are skipped")

    def start_tls_targets():
        """hookgate, nginx and HAProxy on TLS listeners of their own, sharing one certificate."""
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        combined = os.path.join(tmp, "combined.pem")
        open(combined, "w").write(open(cert).read() + open(key).read())
        tls_ports = {k: free_port() for k in ("hookgate-tls", "nginx-tls", "haproxy-tls", "admin-tls")}
        text = open(config).read()
        text = text.replace(f'listen: [{{ addr: "127.0.0.1:{ports["hookgate"]}" }}]',
                            f'listen: [{{ addr: "127.0.0.1:{tls_ports["hookgate-tls"]}", tls: {{ cert: {cert}, key: {key} }} }}]')
        text = text.replace(f"127.0.0.1:{ports['admin']}", f"127.0.0.1:{tls_ports['admin-tls']}")
        text = text.replace("upgrade.sock", "upgrade-tls.sock").replace("https_only: false", "https_only: true")
        path = os.path.join(tmp, "hookgate-tls.yaml")
        open(path, "w").write(text)
        sessions["hookgate-tls"] = start([f"{REL}/hookgate", "--log-format", "json", "run", "-c", path],
                                         env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}).pid
        conf = open(nginx_conf).read().replace(
            f"listen 127.0.0.1:{ports['nginx']};",
            f"listen 127.0.0.1:{tls_ports['nginx-tls']} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; "
            f"ssl_protocols TLSv1.2 TLSv1.3;").replace("nginx.pid", "nginx-tls.pid")
        path = os.path.join(tmp, "nginx-tls.conf")
        open(path, "w").write(conf)
        sessions["nginx-tls"] = start(["nginx", "-c", path]).pid
        conf = open(haproxy_conf).read().replace(
            f"bind 127.0.0.1:{ports['haproxy']}", f"bind 127.0.0.1:{tls_ports['haproxy-tls']} ssl crt {combined}")
        path = os.path.join(tmp, "haproxy-tls.cfg")
        open(path, "w").write(conf)
        sessions["haproxy-tls"] = start(["haproxy", "-db", "-f", path]).pid
        for name in ("hookgate-tls", "nginx-tls", "haproxy-tls"):
            wait_port(tls_ports[name])
        return {name: tls_ports[name] for name in ("hookgate-tls", "nginx-tls", "haproxy-tls")}

    # Fresh deliveries for every round: with the production 24h TTL a replayed one would be a
    # duplicate and short-circuit. 600k per round covers 60k req/s for 10 s.
    per_round = int(os.environ.get("DELIVERIES_PER_ROUND", "600000"))
    files = []
    for r in range(ROUNDS):
        f = os.path.join(tmp, f"deliveries-{r}.tsv")
        subprocess.run([sys.executable, "benches/gen_deliveries.py", str(per_round), SECRET, f, f"r{r}"], check=True)
        files.append(f)

    # The bench's deliveries are checked for real: a forged one must be refused.
    forged = urllib.request.Request(f"http://127.0.0.1:{ports['hookgate']}/webhooks/imggo", method="POST",
                                    data=b'{"event":"job.completed","job_id":"forged","status":"completed","result":{}}',
                                    headers={"X-ImgGo-Signature": "00" * 32})
    try:
        urllib.request.urlopen(forged)
        raise SystemExit("a forged delivery was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    print("forged delivery refused with 401: the checks are on")
    try:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{ports['haproxy']}/webhooks/imggo", method="POST", data=forged.data,
            headers={"X-ImgGo-Signature": "00" * 32}))
        raise SystemExit("haproxy accepted a forged delivery")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    print("haproxy refuses it with 401 too")

    targets = {"upstream": ports["upstream"], "nginx": ports["nginx"], "haproxy": ports["haproxy"],
               "pingora": ports["pingora"], "pingora-hyper": ports["pingora-hyper"],
               "hookgate": ports["hookgate"], "hookgate-redis": ports["hookgate-redis"],
               "hookgate-queue": ports["hookgate-queue"], "hookgate-queue-nats": ports["hookgate-queue-nats"],
               "hookgate-pg": ports["hookgate-pg"],
               "hookgate-queue-pg": ports["hookgate-queue-pg"]}

    if BASELINE:
        targets["hookgate-base"] = ports["hookgate-base"]
    for name in qhook_targets:
        targets[name] = ports[name]

    def queue_backlog(admin="admin-queue"):
        text = urllib.request.urlopen(f"http://127.0.0.1:{ports[admin]}/metrics").read().decode()
        m = re.search(r'hookgate_queue_deliveries\{destination="app",route="imggo",state="pending"\} (\d+)', text)
        return int(m.group(1)) if m else 0
    def pg_pending():
        """Destinations still pending in the Postgres queue route's database: the database's own
        count (the gauge a Postgres replica exports is refreshed from a count that lags)."""
        out = subprocess.run(["psql", f"{PG}/{pg_db}_queue", "-qAtc",
                              "select count(*) from hookgate_destinations where state = 'pending'"],
                             capture_output=True, text=True).stdout.strip()
        return int(out) if out.isdigit() else 0

    # ONLY=pingora,pingora-hyper,haproxy measures just those (every target is still started): a
    # focused comparison in a few minutes. A ratio is printed when both of its sides were measured.
    only = [t for t in os.environ.get("ONLY", "").split(",") if t]
    if only:
        targets = {t: p for t, p in targets.items() if t in only}
    results = {t: [] for t in targets}

    # Targets that keep working after they answer: their CPU per delivery is counted until the
    # work a round gave them is done (the backlog delivered), not only while wrk sends.
    queued = {"hookgate-queue", "hookgate-queue-nats", "hookgate-queue-pg", "qhook", "qhook-pg"}
    # Targets on the shared Postgres: its CPU is counted beside theirs.
    on_postgres = {"hookgate-pg", "hookgate-queue-pg", "qhook-pg"}
    pg_cpu = {t: [] for t in on_postgres}

    def qhook_backlog(name):
        """Jobs qhook accepted and has not finished (its jobs table, on SQLite or on Postgres)."""
        query = "select count(*) from jobs where status in ('available', 'running', 'retryable')"
        if name == "qhook-pg":
            out = subprocess.run(["psql", f"{PG}/{pg_db}_qhook", "-qAtc", query],
                                 capture_output=True, text=True).stdout.strip()
            return int(out) if out.isdigit() else 0
        try:
            with sqlite3.connect(f"file:{os.path.join(tmp, name, 'qhook.db')}?mode=ro", uri=True, timeout=5) as db:
                return db.execute(query).fetchone()[0]
        except sqlite3.Error:
            return 0

    backlog_of = {"hookgate-queue": queue_backlog, "hookgate-queue-nats": lambda: queue_backlog("admin-queue-nats"),
                  "hookgate-queue-pg": pg_pending}
    for name in qhook_targets:
        backlog_of[name] = lambda name=name: qhook_backlog(name)

    def busy_seconds(name):
        total = cpu_seconds(sessions[name])
        if name in on_postgres:
            total += postgres_cpu_seconds(PG) or 0
        return total

    # What a target and the shared Postgres burn with no load at all: polling, gauges, the other
    # gateways' idle connections. Measured once before the rounds and taken off each round's
    # charge, so a round is charged only for the work it gave.
    def idle_cpu_rate(read):
        t0, c0 = time.time(), read()
        time.sleep(2)
        return (read() - c0) / (time.time() - t0)
    own_idle_rate = {name: idle_cpu_rate(lambda name=name: cpu_seconds(sessions[name]))
                     for name in targets if name in queued or name in on_postgres}
    pg_idle_rate = 0.0
    if any(t in on_postgres for t in targets) and postgres_cpu_seconds(PG) is not None:
        pg_idle_rate = idle_cpu_rate(lambda: postgres_cpu_seconds(PG))

    def idle_rate(name):
        return own_idle_rate.get(name, 0) + (pg_idle_rate if name in on_postgres else 0)

    def until_idle(name, limit=900):
        """Waits until the target's backlog is delivered and it (with its Postgres) uses under 2 %
        of a core above its idle rate for half a second. Returns the backlog still left at
        `limit` (0 when it drained), so a round that did not finish is reported, not hidden."""
        t0, last = time.time(), busy_seconds(name)
        while time.time() - t0 < limit:
            time.sleep(0.5)
            now = busy_seconds(name)
            left = backlog_of[name]() if name in backlog_of else 0
            if left == 0 and now - last < 0.01 + 0.5 * idle_rate(name):
                return 0
            last = now
        return backlog_of[name]() if name in backlog_of else 0

    left_over = {}

    def wrk(name, port, deliveries, tls=False, before_idle=lambda: None):
        # The target's own CPU time per request: steadier than req/s on a shared machine, and it
        # is what a check costs. (The upstream target *is* the app, so its figure is the app's.)
        started = time.time()
        cpu_before = cpu_seconds(sessions[name])
        pg_before = postgres_cpu_seconds(PG) if name in on_postgres else None
        header = "X-Webhook-Signature" if name.startswith("qhook") else "X-ImgGo-Signature"
        url = f"https://localhost:{port}/webhooks/imggo" if tls else f"http://127.0.0.1:{port}/webhooks/imggo"
        out = subprocess.run(["wrk", "-t2", f"-c{CONNS}", f"-d{SECONDS}s", "--latency", "-s", "benches/imggo.lua",
                              url, "--", deliveries, header] + (["close"] if tls else []),
                             capture_output=True, text=True, check=True).stdout
        before_idle()
        if name in queued:
            left_over[name] = until_idle(name)
        elapsed = time.time() - started
        cpu = cpu_seconds(sessions[name]) - cpu_before - own_idle_rate.get(name, 0) * elapsed
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))

        def pct(p):
            v, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
            return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
        bad = int(re.search(r"non_200 (\d+)", out).group(1))
        if pg_before is not None:
            pg_cpu[name].append((postgres_cpu_seconds(PG) - pg_before - pg_idle_rate * elapsed) * 1e6 / total)
        return rps, pct(50), pct(99), cpu * 1e6 / total, bad

    for r in range(ROUNDS):
        for name, port in targets.items():
            # The backlog a queue target was left with when wrk stopped; the round's CPU is then
            # counted until it is delivered.
            seen = {"ended": time.time()}

            def note_backlog(name=name, seen=seen):
                seen["ended"] = time.time()
                if name in backlog_of:
                    seen["backlog"] = backlog_of[name]()
            rps, p50, p99, cpu, bad = wrk(name, port, files[r], before_idle=note_backlog)
            results[name].append((rps, p50, p99, cpu, bad))
            extra = ""
            if name in queued:
                extra = f"  backlog {seen.get('backlog', '?')}, idle {time.time() - seen['ended']:.1f} s after wrk"
                if left_over.get(name):
                    extra += f" (NOT drained: {left_over[name]} left, so its CPU is a floor)"
            if name in on_postgres:
                extra += f"  postgres cpu {pg_cpu[name][-1]:6.1f} us/req"
            print(f"round {r + 1} {name:14s} {rps:10.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                  f"cpu {cpu:6.1f} us/req  non-200 {bad}{extra}", flush=True)

    med = {t: tuple(statistics.median(x[i] for x in v) for i in range(4)) for t, v in results.items()}
    print(f"\nmedian of {ROUNDS} rounds, {SECONDS}s each, wrk -t2 -c{CONNS}, same machine, same run")
    print(f"{'target':14s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu us/req':>11s} {'vs nginx':>9s} {'vs pingora':>11s}")
    def vs(rps, peer, width):
        return f"{rps / med[peer][0]:{width - 1}.2f}x" if peer in med else f"{'-':>{width}s}"
    for t, (rps, p50, p99, cpu) in med.items():
        print(f"{t:14s} {rps:10.0f} {p50:8.2f} {p99:8.2f} {cpu:11.1f} {vs(rps, 'nginx', 9)} {vs(rps, 'pingora', 11)}")

    def say(line):
        """Prints a ratio line when every target it reads was measured (see ONLY)."""
        try:
            print(line())
        except KeyError:
            pass
    say(lambda: f"hookgate CPU per request / haproxy's (same checks and more): {med['hookgate'][3] / med['haproxy'][3]:.2f}x, "
          f"p99 {med['hookgate'][2] / med['haproxy'][2]:.2f}x, req/s {med['hookgate'][0] / med['haproxy'][0]:.2f}x")
    if BASELINE:
        say(lambda: f"hookgate / hookgate-base ({BASELINE}): CPU per request {med['hookgate'][3] / med['hookgate-base'][3]:.2f}x, "
              f"req/s {med['hookgate'][0] / med['hookgate-base'][0]:.2f}x, p99 {med['hookgate'][2] / med['hookgate-base'][2]:.2f}x")
    say(lambda: f"hookgate p99 / pingora p99: {med['hookgate'][2] / med['pingora'][2]:.2f}x")
    say(lambda: f"hookgate CPU per request / pingora's: {med['hookgate'][3] / med['pingora'][3]:.2f}x")
    say(lambda: f"hyper's HTTP/1 on Pingora's listener / Pingora's own session (both no checks): CPU per request "
          f"{med['pingora-hyper'][3] / med['pingora'][3]:.2f}x, vs haproxy's {med['pingora-hyper'][3] / med['haproxy'][3]:.2f}x, "
          f"p99 {med['pingora-hyper'][2] / med['pingora'][2]:.2f}x")
    say(lambda: f"hookgate with Redis / with memory store: {med['hookgate-redis'][0] / med['hookgate'][0]:.2f}x req/s, "
          f"CPU per request {med['hookgate-redis'][3] / med['hookgate'][3]:.2f}x")
    say(lambda: f"hookgate queue mode (file store) / forward mode: {med['hookgate-queue'][0] / med['hookgate'][0]:.2f}x req/s, "
          f"p99 {med['hookgate-queue'][2] / med['hookgate'][2]:.2f}x, "
          f"CPU per delivery / forward's per request {med['hookgate-queue'][3] / med['hookgate'][3]:.2f}x")
    say(lambda: f"hookgate queue mode on Postgres / on the file store: "
          f"{med['hookgate-queue-pg'][0] / med['hookgate-queue'][0]:.2f}x req/s, "
          f"CPU per request {med['hookgate-queue-pg'][3] / med['hookgate-queue'][3]:.2f}x")
    say(lambda: f"hookgate forward dedupe on Postgres / on Redis: {med['hookgate-pg'][0] / med['hookgate-redis'][0]:.2f}x req/s, "
          f"CPU per request {med['hookgate-pg'][3] / med['hookgate-redis'][3]:.2f}x")
    for name in qhook_targets:
        ours = "hookgate-queue" if name == "qhook" else "hookgate-queue-pg"
        say(lambda: f"{ours} / {name} (same store kind): {med[ours][0] / med[name][0]:.1f}x req/s, "
              f"CPU per request {med[ours][3] / med[name][3]:.2f}x, p99 {med[ours][2] / med[name][2]:.2f}x")
    pg_med = {t: statistics.median(v) for t, v in pg_cpu.items() if v}
    for t, v in pg_med.items():
        say(lambda: f"{t:14s} gateway {med[t][3]:6.1f} + postgres {v:6.1f} = {med[t][3] + v:6.1f} us of CPU per delivery")
    if "qhook-pg" in pg_med and "hookgate-queue-pg" in pg_med:
        ours, theirs = med["hookgate-queue-pg"][3] + pg_med["hookgate-queue-pg"], med["qhook-pg"][3] + pg_med["qhook-pg"]
        say(lambda: f"hookgate-queue-pg + postgres / qhook-pg + postgres (same Postgres): CPU per delivery {ours / theirs:.2f}x")
    say(lambda: f"hookgate queue mode to JetStream / to the HTTP app (file store both): "
          f"{med['hookgate-queue-nats'][0] / med['hookgate-queue'][0]:.2f}x req/s, "
          f"CPU per delivery {med['hookgate-queue-nats'][3] / med['hookgate-queue'][3]:.2f}x")
    # The senders' real pattern: a new TLS 1.3 connection per delivery (one ECDSA P-256
    # certificate for all, X25519), hookgate with every check against nginx (a plain TLS proxy)
    # and HAProxy (its checks), each on one thread.
    # TLS=0 skips this scenario.
    if os.environ.get("TLS", "1") != "0":
        tls_targets = start_tls_targets()
        tls_results = {t: [] for t in tls_targets}
        for r in range(ROUNDS):
            for name, port in tls_targets.items():
                res = wrk(name, port, files[r], tls=True)
                tls_results[name].append(res)
                print(f"tls round {r + 1} {name:12s} {res[0]:8.0f} req/s  p50 {res[1]:6.2f} ms  p99 {res[2]:7.2f} ms  "
                      f"cpu {res[3]:6.1f} us/req  non-200 {res[4]}", flush=True)
        tmed = {t: tuple(statistics.median(x[i] for x in v) for i in range(4)) for t, v in tls_results.items()}
        print(f"\nnew TLS connection per delivery: median of {ROUNDS} rounds")
        for t, (rps, p50, p99, cpu) in tmed.items():
            print(f"{t:14s} {rps:10.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms  cpu {cpu:6.1f} us/req  "
                  f"vs hookgate-tls cpu {cpu / tmed['hookgate-tls'][3]:.2f}x")
        print(f"hookgate-tls / nginx-tls: CPU per delivery {tmed['hookgate-tls'][3] / tmed['nginx-tls'][3]:.2f}x, "
              f"p99 {tmed['hookgate-tls'][2] / tmed['nginx-tls'][2]:.2f}x")

    total_bad = sum(x[4] for x in results.get("hookgate", []))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/metrics").read().decode()
    fwd = re.search(r'hookgate_requests_total\{outcome="forwarded",route="imggo"\} (\d+)', metrics)
    dup = re.search(r'hookgate_requests_total\{outcome="duplicate",route="imggo"\} (\d+)', metrics)
    print(f"hookgate non-200 answers: {total_bad}; forwarded {fwd.group(1) if fwd else 0}, "
          f"duplicates {dup.group(1) if dup else 0}")
    rss = int(open(f"/proc/{sessions['hookgate']}/status").read().split("VmRSS:")[1].split()[0])
    print(f"hookgate RSS after the run: {rss / 1024:.1f} MiB")
finally:
    stop_all()
    for suffix in ("fwd", "queue", "qhook"):
        subprocess.run(["psql", f"{os.environ.get('PG_URL', 'postgres://postgres@127.0.0.1:5432')}/postgres", "-qc",
                        f"drop database if exists hookgate_load_{os.getpid()}_{suffix}"], check=False)
    # Best effort: drop the Redis keys this run left behind (they carry the run's prefix).
    subprocess.run(f"redis-cli --scan --pattern 'hookgate-load-{os.getpid()}:*' | xargs -r -n 1000 redis-cli del > /dev/null",
                   shell=True, check=False)
    try:
        jetstream_api(f"STREAM.DELETE.{NATS_STREAM}")
    except (OSError, SystemExit):
        pass
