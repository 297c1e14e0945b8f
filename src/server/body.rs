//! Reading the whole request body before anything is forwarded: bounded by `max_body` (counted as
//! it arrives, so a chunked stream is cut off as soon as it is too large) and by the client deadline.

use crate::pipeline::size;
use crate::rejection::Rejection;
use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::ServerSession;
use tokio::time::{timeout_at, Instant};

pub enum BodyError {
    Refused(Rejection),
    /// The client broke the protocol or went away: nobody to answer.
    ClientGone,
}

/// Reads the complete body. A body that arrives in one piece is not copied.
pub async fn read(
    session: &mut ServerSession,
    max: usize,
    deadline: Instant,
) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut received = 0usize;
    loop {
        let chunk = match timeout_at(deadline, session.read_request_body()).await {
            Err(_) => return Err(BodyError::Refused(Rejection::RequestTimeout)),
            Ok(Err(e)) if e.etype() == &pingora_core::ErrorType::ReadTimedout => {
                return Err(BodyError::Refused(Rejection::RequestTimeout))
            }
            Ok(Err(_)) => return Err(BodyError::ClientGone),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        received += chunk.len();
        size::check_received(received, max).map_err(BodyError::Refused)?;
        match (&mut first, &mut joined) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity((f.len() + chunk.len()) * 2);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}
