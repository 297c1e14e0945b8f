//! The claim on a Redis older than 7.0, which refuses `SET` with both `NX` and `GET`. No such
//! Redis is installed here, so a stand-in speaks the protocol: it refuses that `SET` as told (as
//! Redis 6.2 does, or as a full Redis does), answers a script's claim, and records every command
//! it got.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

type Commands = Arc<Mutex<Vec<Vec<String>>>>;

/// Reads one command (a RESP array of bulk strings); `None` when the client hung up.
fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        reader.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(String::from_utf8(arg).ok()?);
    }
    Some(args)
}

/// How Redis 6.2 refuses `SET` with `NX` and `GET`.
const BEFORE_7: &[u8] = b"-ERR syntax error\r\n";
/// How a Redis at its `maxmemory` refuses any write.
const FULL: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";

fn answer(command: &[String], set_refusal: &'static [u8]) -> &'static [u8] {
    let name = command[0].to_ascii_uppercase();
    let has = |word: &str| command.iter().any(|a| a.eq_ignore_ascii_case(word));
    match name.as_str() {
        "SET" if has("NX") && has("GET") => set_refusal,
        "EVALSHA" => b"*2\r\n$7\r\nclaimed\r\n:0\r\n",
        "PING" => b"+PONG\r\n",
        _ => b"+OK\r\n",
    }
}

/// A stand-in on a free port that refuses `SET NX GET` with `set_refusal`, and the commands it got.
fn stand_in(set_refusal: &'static [u8]) -> (u16, Commands) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let commands: Commands = Arc::default();
    let seen = commands.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                while let Some(command) = read_command(&mut reader) {
                    let reply = answer(&command, set_refusal);
                    seen.lock().unwrap().push(command);
                    if writer.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, commands)
}

fn key(id: u128) -> DeliveryKey {
    DeliveryKey {
        scope: "imggo".into(),
        id,
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
    }
}

/// Claims keys 1..=n on a stand-in refusing `SET NX GET` with `set_refusal`; returns each
/// claim's outcome and how many `SET` and `EVALSHA` commands the stand-in got.
async fn claims(
    n: u128,
    set_refusal: &'static [u8],
) -> (Vec<Result<Claim, StoreError>>, usize, usize) {
    let (port, commands) = stand_in(set_refusal);
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "t").unwrap();
    let mut outcomes = Vec::new();
    for id in 1..=n {
        outcomes.push(store.claim(&key(id), Duration::from_secs(60)).await);
    }
    let commands = commands.lock().unwrap();
    let named = |name: &str| {
        commands
            .iter()
            .filter(|c| c[0].eq_ignore_ascii_case(name))
            .count()
    };
    (outcomes, named("SET"), named("EVALSHA"))
}

#[tokio::test]
async fn a_redis_before_7_refusing_set_nx_get_gets_every_claim_by_script() {
    let (outcomes, sets, scripts) = claims(3, BEFORE_7).await;
    for claim in &outcomes {
        assert!(matches!(claim, Ok(Claim::Claimed(_))), "{outcomes:?}");
    }
    assert_eq!(sets, 1, "only the first claim tries SET NX GET");
    assert_eq!(scripts, 3, "every claim ran the script");
}

#[tokio::test]
async fn a_full_redis_refusing_the_claim_does_not_switch_claims_to_the_script() {
    let (outcomes, sets, scripts) = claims(2, FULL).await;
    for claim in &outcomes {
        assert!(
            matches!(claim, Err(StoreError::Unavailable(_))),
            "{outcomes:?}"
        );
    }
    assert_eq!(sets, 2, "each claim tried SET NX GET");
    assert_eq!(scripts, 0);
}

/// The machine's Redis (127.0.0.1:6379), under a prefix of this run's own.
#[tokio::test]
async fn redis_keeps_every_promise_of_a_store() {
    let prefix = format!("hookgate-unit-{:08x}", rand::random::<u32>());
    let store = RedisStore::connect("redis://127.0.0.1:6379/0", &prefix).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis on 127.0.0.1:6379 must answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::store::conformance::claims(&store).await;
}
