//! The file store's acceptance rate on its own, without HTTP: `concurrency` tasks enqueue 1 KiB
//! deliveries for `seconds`, as the gateway's connections would; then, with the backlog that
//! left, the cost of the worker's passes (take 32 due attempts, record them at once as the
//! worker does, find the next due), in wall time and CPU time per attempt.
//!
//!     cargo run --release --example queue_store -- [seconds] [concurrency] [path]

use bytes::Bytes;
use hookgate::pipeline::DeliveryKey;
use hookgate::store::file::FileStore;
use hookgate::store::queue::{unix_ms, Enqueued, NewDelivery, Next, Queue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let path = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("q.db"));
    let store = Arc::new(FileStore::open(&path).unwrap());
    let done = Arc::new(AtomicU64::new(0));
    // The first id accepted: the oldest delivery, for the log's lookup below.
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, done, first) = (store.clone(), done.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            let mut i: u128 = 0;
            while Instant::now() < until {
                i += 1;
                let key = DeliveryKey {
                    scope: Arc::from("imggo"),
                    id: (t as u128) << 64 | i,
                    lease: Duration::from_secs(60),
                    ttl: Duration::from_secs(86400),
                };
                let new = NewDelivery {
                    route: "imggo".into(),
                    key: Some(key),
                    event: Some("job.completed".into()),
                    target: "/webhooks/imggo".into(),
                    headers: Bytes::from(vec![b'h'; 700]),
                    body: Bytes::from(vec![b'b'; 300]),
                    destinations: vec!["app".into()],
                    order_key: None,
                    received_ms: unix_ms(SystemTime::now()),
                    max_queued: u64::MAX,
                };
                match store.enqueue(new).await {
                    Ok(Enqueued::Queued(id)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        first.fetch_min(id.0, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("not queued: {other:?}");
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{n} accepted in {elapsed:.1}s: {:.0}/s, {:.1} us CPU per acceptance, file {} MiB",
        n as f64 / elapsed,
        cpu * 1e6 / n as f64,
        std::fs::metadata(&path).map_or(0, |m| m.len() >> 20)
    );

    // The worker's passes with that backlog pending: take 32, record them delivered (at once,
    // as the worker does), next due.
    let passes = 100;
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    for _ in 0..passes {
        let now = unix_ms(SystemTime::now());
        let due = store
            .take_due("imggo", "app", now, 32, Duration::from_secs(60))
            .await
            .unwrap();
        let mut records = Vec::new();
        for a in due {
            let result = hookgate::store::queue::AttemptResult {
                id: a.id,
                destination: a.destination,
                attempt: a.attempt,
                started_ms: now,
                duration_ms: 1,
                status: Some(200),
                error: None,
                next: Next::Delivered,
                counts: true,
            };
            let store = store.clone();
            records.push(tokio::spawn(async move { store.record(result).await }));
        }
        for r in records {
            r.await.unwrap().unwrap();
        }
        let _ = store.next_due("imggo", "app").await.unwrap();
    }
    let per_attempt = started.elapsed().as_secs_f64() * 1e6 / f64::from(passes * 32);
    let cpu_per_attempt = (cpu_seconds() - cpu0) * 1e6 / f64::from(passes * 32);
    let rss_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    println!(
        "with {n} pending: {per_attempt:.1} us per attempt taken and recorded, \
         {cpu_per_attempt:.1} us CPU; RSS {} MiB",
        rss_kib >> 10
    );

    // The delivery log on that store: the newest page, one delivery (the oldest, so the longest
    // pending), and a filter that matches nothing (the worst case: it reads every delivery).
    use hookgate::store::queue::{DeliveryId, DeliveryLog, DeliveryState, ListFilter};
    let timed = |started: Instant| started.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let (page, _) = store
        .list(ListFilter {
            limit: 50,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    println!("list, newest {}: {:.1} ms", page.len(), timed(t));
    let oldest = DeliveryId(first.load(Ordering::Relaxed));
    let t = Instant::now();
    let detail = store.get(oldest).await.unwrap();
    println!(
        "one delivery ({}): {:.2} ms",
        detail.map_or("none".into(), |d| d.summary.id),
        timed(t)
    );
    let t = Instant::now();
    let _ = store
        .list(ListFilter {
            state: Some(DeliveryState::Dead),
            limit: 50,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    println!(
        "list, state=dead (none match: reads all {n}): {:.0} ms",
        timed(t)
    );
}
