//! One queue route destination as written (`upstreams[i]`) compiled into a [`Destination`]: an
//! app over HTTP, or a broker chosen by the URL's scheme with the keys that scheme needs.

use super::compile::{upstream_url, Ctx};
use super::raw::RawDestination;
use super::{Broker, BrokerKind, Condition, Destination, DestinationTarget};
use std::sync::Arc;

/// The broker schemes (PRODUCT.md §9).
const BROKER_SCHEMES: &[&str] = &[
    "nats",
    "tls",
    "nats+tls",
    "amqp",
    "amqps",
    "redis",
    "rediss",
    "kafka",
    "kafka+tls",
];

/// The broker scheme `url` starts with, if any.
pub(super) fn broker_scheme(url: &str) -> Option<&'static str> {
    let (scheme, _) = url.split_once("://")?;
    BROKER_SCHEMES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(scheme))
        .copied()
}

/// The keys each kind reads; any other kind's key set on a destination is an error.
const KEYS: &[(&str, &[&str])] = &[
    ("http", &[]),
    ("nats", &["subject"]),
    ("amqp", &["exchange", "routing_key"]),
    ("redis", &["stream", "max_len"]),
    ("kafka", &["topic", "key"]),
];

/// `url` with the password of its user info replaced, for `check` and logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// The bootstrap brokers of `kafka://host[:port][,host[:port]…]` (9092 when a port is left
/// out), and whether the scheme asks for TLS.
fn kafka_brokers(url: &str) -> Result<(Vec<String>, bool), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("kafka", url));
    let tls = scheme.eq_ignore_ascii_case("kafka+tls");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "SASL credentials are not supported in this version of kafka:// \
                    (use a listener without authentication, over kafka+tls://)"
                .to_string(),
        );
    }
    let mut brokers = Vec::new();
    for host in authority.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err("expected kafka://host:port[,host:port…]".to_string());
        }
        let has_port = match host.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(':') => {
                port.parse::<u16>()
                    .map_err(|_| format!("{port:?} is not a port"))?;
                true
            }
            _ => false,
        };
        brokers.push(if has_port {
            host.to_string()
        } else {
            format!("{host}:9092")
        });
    }
    Ok((brokers, tls))
}

pub(super) fn destination(cx: &mut Ctx<'_>, at: &str, d: &RawDestination) -> Option<Destination> {
    let before = cx.problems_len();
    if d.events.as_ref().is_some_and(Vec::is_empty) {
        cx.err(
            format!("{at}.events"),
            "an empty list would send nothing here; omit events to send every event",
        );
    }
    let when = d
        .when
        .as_deref()
        .and_then(|src| match Condition::compile(src) {
            Ok(c) => Some(c),
            Err(e) => {
                cx.err(format!("{at}.when"), e);
                None
            }
        });
    let url = cx.expand(&format!("{at}.url"), &d.url);
    let url = match url.strip_prefix("file:") {
        Some(path) => cx.secret_file(&format!("{at}.url"), path),
        None => url,
    };
    let kind = match broker_scheme(&url) {
        None => "http",
        Some("nats" | "tls" | "nats+tls") => "nats",
        Some("amqp" | "amqps") => "amqp",
        Some("redis" | "rediss") => "redis",
        Some(_) => "kafka",
    };
    let set: [(&str, bool); 7] = [
        ("subject", d.subject.is_some()),
        ("exchange", d.exchange.is_some()),
        ("routing_key", d.routing_key.is_some()),
        ("stream", d.stream.is_some()),
        ("max_len", d.max_len.is_some()),
        ("topic", d.topic.is_some()),
        ("key", d.key.is_some()),
    ];
    let own = KEYS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[][..], |(_, keys)| keys);
    let described = match kind {
        "http" => "an HTTP",
        "nats" => "a nats",
        "amqp" => "an amqp",
        "redis" => "a redis",
        _ => "a kafka",
    };
    for (key, is_set) in set {
        if is_set && !own.contains(&key) {
            cx.err(
                format!("{at}.{key}"),
                format!("{described} destination has no {key}"),
            );
        }
    }
    let required = |cx: &mut Ctx<'_>, key: &str, value: &Option<String>| -> String {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                cx.err(
                    format!("{at}.{key}"),
                    format!("{described} destination needs a {key}"),
                );
                String::new()
            }
        }
    };
    let broker = |kind: BrokerKind| {
        DestinationTarget::Broker(Broker {
            url: url.clone(),
            shown: redacted(&url),
            kind,
        })
    };
    let target = match kind {
        "http" => upstream_url(cx, &format!("{at}.url"), url.clone()).map(DestinationTarget::Http),
        "nats" => {
            let subject = required(cx, "subject", &d.subject);
            if subject.contains(['*', '>', ' ']) {
                cx.err(
                    format!("{at}.subject"),
                    "a subject to publish to has no wildcards or spaces",
                );
            }
            Some(broker(BrokerKind::Nats { subject }))
        }
        "amqp" => match &d.exchange {
            Some(exchange) => Some(broker(BrokerKind::Amqp {
                exchange: exchange.clone(),
                routing_key: d.routing_key.clone().unwrap_or_default(),
            })),
            None => {
                cx.err(
                    format!("{at}.exchange"),
                    "an amqp destination needs an exchange (\"\" is the default exchange)",
                );
                None
            }
        },
        "redis" => {
            let stream = required(cx, "stream", &d.stream);
            if d.max_len == Some(0) {
                cx.err(format!("{at}.max_len"), "must be at least 1");
            }
            Some(broker(BrokerKind::RedisStream {
                stream,
                max_len: d.max_len,
            }))
        }
        _ => {
            let topic = required(cx, "topic", &d.topic);
            if let Some(p) = d.key.as_deref().filter(|p| !p.starts_with('/')) {
                cx.err(
                    format!("{at}.key"),
                    format!("{p:?} is not a JSON pointer (e.g. /customer_id)"),
                );
            }
            match kafka_brokers(&url) {
                Ok((brokers, tls)) => Some(broker(BrokerKind::Kafka {
                    brokers,
                    tls,
                    topic,
                    key: d.key.clone(),
                })),
                Err(e) => {
                    cx.err(format!("{at}.url"), e);
                    None
                }
            }
        }
    };
    if cx.problems_len() > before {
        return None;
    }
    Some(Destination {
        name: Arc::from(d.name.as_str()),
        target: target?,
        events: d.events.clone(),
        when,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shown_url_hides_its_password() {
        assert_eq!(
            super::redacted("amqps://app:s3cret@rabbit:5671/%2f"),
            "amqps://app:***@rabbit:5671/%2f"
        );
        assert_eq!(
            super::redacted("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(super::redacted("redis://:pw@h/0"), "redis://:***@h/0");
    }

    #[test]
    fn kafka_urls_name_their_bootstrap_brokers() {
        assert_eq!(
            super::kafka_brokers("kafka://k1:9093,k2"),
            Ok((vec!["k1:9093".to_string(), "k2:9092".to_string()], false))
        );
        assert_eq!(
            super::kafka_brokers("kafka+tls://k1:9094/"),
            Ok((vec!["k1:9094".to_string()], true))
        );
        assert!(super::kafka_brokers("kafka://k1:x").is_err());
        assert!(super::kafka_brokers("kafka://,k2").is_err());
        assert!(super::kafka_brokers("kafka://u:p@k1").is_err());
    }
}
