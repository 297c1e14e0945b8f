//! Reading the whole request body before anything is forwarded: bounded by `max_body` (counted as
//! it arrives, so a chunked stream is cut off as soon as it is too large), by the body budget
//! (`max_inflight_body`) and by the request's one client deadline.

use super::budget::Reservation;
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

/// Reads the complete body, holding it against `reservation`. A declared length is reserved
/// (and allocated) up front, exactly; a chunked body reserves as it grows. A body that arrives
/// in one piece is not copied.
pub async fn read(
    session: &mut ServerSession,
    max: usize,
    declared: Option<usize>,
    reservation: &mut Reservation,
    deadline: Instant,
) -> Result<Bytes, BodyError> {
    if let Some(n) = declared {
        if !reservation.cover(n) {
            return Err(BodyError::Refused(Rejection::Overloaded));
        }
    }
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
        if !reservation.cover(received) {
            return Err(BodyError::Refused(Rejection::Overloaded));
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let room = declared.unwrap_or(received).max(received);
                let mut buf = BytesMut::with_capacity(room);
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
