//! RSS of the memory store holding N delivered keys (default 1,000,000), with the same allocator
//! as the gateway. `cargo run --release --example memory_footprint -- 1000000`

use hookgate::pipeline::DeliveryKey;
use hookgate::store::{memory::MemoryStore, Claim, Store};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let n: u128 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_mib();
    let store = MemoryStore::new(n as u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let route: Arc<str> = Arc::from("imggo");
    rt.block_on(async {
        for i in 0..n {
            // Spread ids like real SHA-256-derived ones.
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            let key = DeliveryKey {
                scope: route.clone(),
                lease: Duration::from_secs(60),
                ttl: Duration::from_secs(86400),
                id,
            };
            if let Claim::Claimed(t) = store.claim(&key, Duration::from_secs(60)).await.unwrap() {
                store
                    .complete(&key, t, Duration::from_secs(86400))
                    .await
                    .unwrap();
            }
        }
    });
    let held: i64 = store.held_keys().iter().map(|(_, n)| n).sum();
    let after = rss_mib();
    println!(
        "keys held {held}; RSS before {before:.1} MiB, after {after:.1} MiB; {:.0} bytes per key",
        (after - before) * 1024.0 * 1024.0 / held.max(1) as f64
    );
}
