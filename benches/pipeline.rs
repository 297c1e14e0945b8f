//! Criterion benchmarks of each pipeline step on its own, and of the whole pipeline on one
//! request view, without a network. `cargo bench --bench pipeline`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use hookgate::config::{self, Config};
use hookgate::pipeline::{self, address, Head};
use hookgate::store::{memory::MemoryStore, Store};
use http::{HeaderMap, HeaderValue, Method};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

const SECRET: &str = "bench-secret";

fn config() -> Config {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/schemas/imggo-webhook.json");
    let text = format!(
        r#"listen: [{{ addr: "127.0.0.1:8080" }}]
routes:
  - name: imggo
    path: /webhooks/imggo
    upstream: "http://127.0.0.1:5000"
    allow_ips: ["127.0.0.0/8", "203.0.113.0/24"]
    signature: {{ scheme: imggo, secrets: ["{SECRET}"] }}
    schema: {}
    events: {{ pointer: /event, allow: [job.completed, job.failed] }}
    idempotency: {{ key: ["/event", "/job_id"] }}
"#,
        schema.display()
    );
    config::from_text(&text, Path::new("bench.yaml"), &|_| None).expect("bench config")
}

fn imggo_body(job: usize) -> Vec<u8> {
    format!(
        r#"{{"event":"job.completed","job_id":"job_{job}","status":"completed","created_at":"2026-11-28T12:00:00Z","result":{{"url":"https://cdn.imggo.example/{job}.png","width":1024,"height":768,"format":"png","bytes":123456}}}}"#
    )
    .into_bytes()
}

fn signed_headers(body: &[u8]) -> HeaderMap {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(body);
    let mut h = HeaderMap::new();
    h.insert(
        "x-imggo-signature",
        HeaderValue::from_str(&hex::encode(m.finalize().into_bytes())).unwrap(),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn signature(c: &mut Criterion) {
    let cfg = config();
    let route = cfg.policy.route("/webhooks/imggo").unwrap();
    let scheme = route.signature.as_deref().unwrap();
    let mut g = c.benchmark_group("signature/imggo");
    for size in [1024usize, 64 * 1024, 1 << 20] {
        let body = vec![b'x'; size];
        let headers = signed_headers(&body);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                scheme
                    .verify(black_box(&headers), black_box(body), SystemTime::now())
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn parse_and_schema(c: &mut Criterion) {
    let cfg = config();
    let route = cfg.policy.route("/webhooks/imggo").unwrap();
    let schema = route.schema.as_ref().unwrap();
    let body = imggo_body(1);
    c.bench_function("parse+schema/imggo", |b| {
        b.iter(|| {
            let json = pipeline::parse::parse(black_box(&body)).unwrap();
            pipeline::schema::check(schema, &json).unwrap();
        })
    });
}

fn client_address(c: &mut Criterion) {
    let mut g = c.benchmark_group("allow_ips");
    for n in [10usize, 1000] {
        // n /24 networks; the client matches the last one (worst case for a scan).
        let list: Vec<IpNet> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        let nets = hookgate::config::NetSet::new(&list);
        let none = hookgate::config::NetSet::default();
        let last = n - 1;
        let peer: IpAddr = format!("10.{}.{}.7", last / 256, last % 256)
            .parse()
            .unwrap();
        let headers = HeaderMap::new();
        g.bench_with_input(BenchmarkId::from_parameter(n), &nets, |b, nets| {
            b.iter(|| {
                let client = address::resolve(black_box(peer), true, &headers, &none);
                address::check(Some(nets), &client).unwrap();
            })
        });
    }
    g.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new(1_000_000);
    let route: std::sync::Arc<str> = std::sync::Arc::from("imggo");
    let mut i: u128 = 0;
    c.bench_function("memory_store/claim+complete", |b| {
        b.iter(|| {
            i += 1;
            let key = pipeline::DeliveryKey {
                scope: route.clone(),
                id: i,
                lease: Duration::from_secs(60),
                ttl: Duration::from_secs(86400),
            };
            rt.block_on(async {
                let hookgate::store::Claim::Claimed(t) =
                    store.claim(&key, Duration::from_secs(60)).await.unwrap()
                else {
                    panic!("fresh key must be claimable")
                };
                store
                    .complete(&key, t, Duration::from_secs(86400))
                    .await
                    .unwrap();
            })
        })
    });
}

fn whole_pipeline(c: &mut Criterion) {
    let cfg = config();
    let gateway = &cfg.policy;
    let body = imggo_body(7);
    let headers = signed_headers(&body);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("pipeline/imggo_head+body", |b| {
        b.iter(|| {
            let head = Head {
                method: &Method::POST,
                path: "/webhooks/imggo",
                headers: &headers,
                peer,
                tls: true,
            };
            let admitted = pipeline::check_head(gateway, &head).ok().unwrap();
            let key = pipeline::check_body(
                admitted.route,
                &headers,
                black_box(&body),
                SystemTime::now(),
            )
            .unwrap();
            black_box(key)
        })
    });
}

criterion_group!(
    benches,
    signature,
    parse_and_schema,
    client_address,
    memory_store,
    whole_pipeline
);
criterion_main!(benches);
