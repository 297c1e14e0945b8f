//! `hookgate deliveries list|show|retry|replay` (PRODUCT.md §1): the delivery log through the admin API,
//! as a table or, with `--json`, the API's own JSON.

use super::http;
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (for the default admin address).
    #[arg(short, long, default_value = "config/hookgate.yaml", global = true)]
    config: PathBuf,
    /// Admin API base URL, e.g. http://127.0.0.1:9090 (default: the config's admin.addr).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Newest deliveries first.
    List {
        #[arg(long)]
        route: Option<String>,
        /// pending, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One delivery with its destinations and every attempt.
    Show { id: String },
    /// Attempt again now, with a fresh retry schedule: one delivery's dead (or named)
    /// destinations, or with --route R --state dead every dead delivery of a route.
    Retry {
        id: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    /// Attempt again every delivery of a route received in a window, delivered ones too: to
    /// every destination each has, or to --destination D (added where missing: a backfill).
    Replay {
        #[arg(long)]
        route: String,
        /// RFC 3339 time, or a duration before now (2h, 7d).
        #[arg(long)]
        since: String,
        /// RFC 3339 time, or a duration before now (default: now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        destination: Option<String>,
    },
}

pub fn run(args: Args) -> i32 {
    match run_inner(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hookgate deliveries: {e}");
            1
        }
    }
}

fn run_inner(args: &Args) -> Result<(), String> {
    let base = match &args.admin {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let config = crate::config::load(&args.config).map_err(|e| e.to_string())?;
            let admin = config.admin.ok_or_else(|| {
                format!(
                    "{} has no admin listener; pass --admin URL",
                    args.config.display()
                )
            })?;
            format!("http://{}", admin.addr)
        }
    };
    let (method, path) = match &args.action {
        Action::List {
            route,
            state,
            destination,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (name, value) in [
                ("route", route),
                ("state", state),
                ("destination", destination),
            ] {
                if let Some(v) = value {
                    q.push(format!("{name}={}", encode(v)));
                }
            }
            ("GET", format!("/api/deliveries?{}", q.join("&")))
        }
        Action::Show { id } => ("GET", format!("/api/deliveries/{}", encode(id))),
        Action::Retry {
            id: Some(id),
            destination,
            route: None,
            state: None,
        } => {
            let q = destination
                .as_ref()
                .map_or_else(String::new, |d| format!("?destination={}", encode(d)));
            ("POST", format!("/api/deliveries/{}/retry{q}", encode(id)))
        }
        Action::Retry {
            id: None,
            destination: None,
            route: Some(route),
            state: Some(state),
        } if state == "dead" => (
            "POST",
            format!("/api/deliveries/retry?route={}&state=dead", encode(route)),
        ),
        Action::Retry { .. } => {
            return Err("retry takes an ID [--destination D], or --route R --state dead".into())
        }
        Action::Replay {
            route,
            since,
            until,
            destination,
        } => {
            let mut q = vec![
                format!("route={}", encode(route)),
                format!("since={}", encode(since)),
            ];
            for (name, value) in [("until", until), ("destination", destination)] {
                if let Some(v) = value {
                    q.push(format!("{name}={}", encode(v)));
                }
            }
            ("POST", format!("/api/deliveries/replay?{}", q.join("&")))
        }
    };
    let mut headers = Vec::new();
    if let Ok(token) = std::env::var("HOOKGATE_ADMIN_TOKEN") {
        if !token.is_empty() {
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
    }
    let (status, body) =
        http::request(method, &format!("{base}{path}"), headers, Vec::new(), false)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))?;
    if !(200..300).contains(&status) {
        let message = json["error"]["message"].as_str().unwrap_or("");
        let code = json["error"]["code"].as_str().unwrap_or("error");
        return Err(format!("HTTP {status} {code}: {message}"));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return Ok(());
    }
    match &args.action {
        Action::List { .. } => print_list(&json),
        Action::Show { .. } => print_detail(&json),
        Action::Retry { .. } | Action::Replay { .. } => println!("requeued {}", json["requeued"]),
    }
    Ok(())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn destinations(d: &Value) -> String {
    d["destinations"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|x| format!("{}:{}", cell(&x["name"]), cell(&x["state"])))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_list(json: &Value) {
    let rows: Vec<Vec<String>> = json["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                cell(&d["id"]),
                cell(&d["received_at"]),
                cell(&d["route"]),
                cell(&d["event"]),
                cell(&d["state"]),
                destinations(d),
            ]
        })
        .collect();
    table(
        &["ID", "RECEIVED", "ROUTE", "EVENT", "STATE", "DESTINATIONS"],
        &rows,
    );
    if let Some(next) = json["next"].as_str() {
        println!("(more: the API's ?before={next})");
    }
}

fn print_detail(d: &Value) {
    for field in ["id", "route", "received_at", "key", "event", "state"] {
        println!("{field:<12} {}", cell(&d[field]));
    }
    println!();
    let rows: Vec<Vec<String>> = d["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            [
                "name",
                "state",
                "attempts",
                "next_attempt_at",
                "last_status",
                "last_error",
            ]
            .iter()
            .map(|f| cell(&x[*f]))
            .collect()
        })
        .collect();
    table(
        &[
            "DESTINATION",
            "STATE",
            "ATTEMPTS",
            "NEXT",
            "LAST STATUS",
            "LAST ERROR",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = d["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            [
                "n",
                "destination",
                "started_at",
                "duration_ms",
                "status",
                "error",
            ]
            .iter()
            .map(|f| cell(&a[*f]))
            .collect()
        })
        .collect();
    table(
        &["#", "DESTINATION", "STARTED", "MS", "STATUS", "ERROR"],
        &rows,
    );
}
