//! What the file store keeps per delivery and per attempt, and how a record is encoded.

use crate::store::queue::{
    DeliveryId, DeliveryState, DeliverySummary, DestinationState, DestinationView,
};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredDelivery {
    pub(super) route: String,
    pub(super) received_ms: u64,
    pub(super) key: Option<String>,
    pub(super) event: Option<String>,
    pub(super) target: String,
    /// Length of the header lines at the start of the payload.
    pub(super) head_len: usize,
    pub(super) destinations: Vec<StoredDestination>,
    /// Attempts recorded, over every destination (numbers the `ATTEMPTS` rows).
    pub(super) attempts_recorded: u32,
    pub(super) finished_ms: Option<u64>,
    /// The `order_by` value, where the route orders its deliveries.
    #[serde(default)]
    pub(super) order_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredDestination {
    pub(super) name: String,
    pub(super) state: DestinationState,
    /// Attempts started.
    pub(super) attempts: u32,
    /// Attempts since the last retry by hand (indexes the retry schedule).
    pub(super) scheduled: u32,
    /// Where this destination's `DUE` row is, while pending.
    pub(super) due_ms: Option<u64>,
    pub(super) last_status: Option<u16>,
    pub(super) last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredAttempt {
    pub(super) destination: String,
    pub(super) n: u32,
    pub(super) started_ms: u64,
    pub(super) duration_ms: u64,
    pub(super) status: Option<u16>,
    pub(super) error: Option<String>,
}

impl StoredDelivery {
    pub(super) fn state(&self) -> DeliveryState {
        DeliveryState::of(self.destinations.iter().map(|d| d.state))
    }

    pub(super) fn summary(&self, id: DeliveryId) -> DeliverySummary {
        DeliverySummary {
            id: id.to_string(),
            route: self.route.clone(),
            received_ms: self.received_ms,
            key: self.key.clone(),
            event: self.event.clone(),
            state: self.state(),
            destinations: self
                .destinations
                .iter()
                .map(|d| DestinationView {
                    name: d.name.clone(),
                    state: d.state,
                    attempts: d.attempts,
                    next_attempt_ms: match d.state {
                        DestinationState::Pending => d.due_ms,
                        _ => None,
                    },
                    last_status: d.last_status,
                    last_error: d.last_error.clone(),
                })
                .collect(),
        }
    }
}

pub(super) fn dest_key(route: &str, destination: &str) -> String {
    format!("{route}/{destination}")
}

/// A redb failure as a caller acts on it: a full disk, a damaged file, or (anything else) a
/// store that cannot serve now.
pub(super) fn err(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    match &e {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => StoreError::full(e),
        redb::Error::Corrupted(_) => StoreError::corrupt(e),
        _ => StoreError::unavailable(e),
    }
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::corrupt)
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_and_a_damaged_file_are_told_apart_from_a_store_that_cannot_serve_now() {
        const ENOSPC: i32 = 28;
        let full = redb::Error::Io(std::io::Error::from_raw_os_error(ENOSPC));
        assert!(matches!(err(full), StoreError::Full(_)));
        let damaged = redb::Error::Corrupted("a page's checksum does not match".into());
        assert!(matches!(err(damaged), StoreError::Corrupt(_)));
        let busy = redb::Error::TransactionInProgress;
        assert!(matches!(err(busy), StoreError::Unavailable(_)));
        assert!(matches!(
            decode::<StoredAttempt>(b"{not json"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
