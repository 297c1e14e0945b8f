//! Why an exchange with a destination (an app over HTTP, or a broker) failed, with its cause.
//!
//! Forward routes turn it into the sender's answer in one place ([`ExchangeError::rejection`]);
//! the queue worker records it as the attempt's `result` label and its `error` text in the
//! delivery log ([`ExchangeError::result`], `Display`).

use crate::rejection::Rejection;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// No answer (or broker ack) within the timeout.
    #[error("timeout: no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The destination could not be reached: refused, unresolvable, no route.
    #[error("connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (certificate, protocol).
    #[error("tls: {0}")]
    Tls(String),
    /// The connection broke while writing or reading.
    #[error("io: {0}")]
    Io(String),
    /// The answer was not valid HTTP.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The answer's body exceeded what hookgate buffers.
    #[error("response too large: over {0} bytes")]
    ResponseTooLarge(usize),
    /// A broker refused the message (a nack, an unroutable message, a stream's error).
    #[error("refused: {0}")]
    Refused(String),
}

impl ExchangeError {
    /// The sender's answer on a forward route.
    pub fn rejection(&self) -> Rejection {
        match self {
            ExchangeError::Timeout(_) => Rejection::UpstreamTimeout,
            _ => Rejection::UpstreamUnavailable,
        }
    }

    /// `hookgate_delivery_attempts_total`'s `result` label (PRODUCT.md §7).
    pub fn result(&self) -> &'static str {
        match self {
            ExchangeError::Timeout(_) => "timeout",
            ExchangeError::Refused(_) => "nack",
            _ => "unavailable",
        }
    }

    /// Sorts one of Pingora's connection errors by its type, keeping its text as the cause.
    pub fn from_pingora(e: &pingora_core::Error, timeout: std::time::Duration) -> Self {
        use pingora_core::ErrorType as T;
        let cause = e.to_string();
        match e.etype() {
            T::ConnectTimedout | T::ReadTimedout | T::WriteTimedout => Self::Timeout(timeout),
            T::TLSHandshakeFailure
            | T::TLSHandshakeTimedout
            | T::InvalidCert
            | T::HandshakeError => Self::Tls(cause),
            T::ConnectRefused
            | T::ConnectNoRoute
            | T::ConnectError
            | T::BindError
            | T::ConnectProxyFailure
            | T::SocketError => Self::Connect(cause),
            T::InvalidHTTPHeader | T::H1Error | T::H2Error | T::InvalidH2 => {
                Self::BadResponse(cause)
            }
            _ => Self::Io(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_504_and_every_other_cause_502() {
        let t = ExchangeError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(t.rejection(), Rejection::UpstreamTimeout);
        assert_eq!(t.result(), "timeout");
        for e in [
            ExchangeError::Connect("refused".into()),
            ExchangeError::Tls("bad cert".into()),
            ExchangeError::Io("reset".into()),
            ExchangeError::BadResponse("garbage".into()),
            ExchangeError::ResponseTooLarge(16),
        ] {
            assert_eq!(e.rejection(), Rejection::UpstreamUnavailable, "{e}");
            assert_eq!(e.result(), "unavailable", "{e}");
        }
        assert_eq!(ExchangeError::Refused("nack".into()).result(), "nack");
    }

    #[test]
    fn the_cause_is_in_the_text() {
        let e = ExchangeError::Connect("Connection refused (os error 111)".into());
        assert_eq!(e.to_string(), "connect: Connection refused (os error 111)");
    }
}
