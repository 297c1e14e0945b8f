//! What the gauges and `max_queued` read without touching the file, and the changes one
//! transaction makes to it, applied once it committed.

use std::collections::HashMap;

/// Count changes a transaction makes, applied to [`Counts`] once it committed.
#[derive(Default)]
pub(super) struct Deltas {
    pub(super) open: Vec<(String, i64)>,
    pub(super) pending: Vec<(String, i64)>,
    pub(super) dead: Vec<(String, i64)>,
}

impl Deltas {
    pub(super) fn open(&mut self, route: &str, n: i64) {
        self.open.push((route.to_string(), n));
    }
    pub(super) fn pending(&mut self, key: &str, n: i64) {
        self.pending.push((key.to_string(), n));
    }
    pub(super) fn dead(&mut self, key: &str, n: i64) {
        self.dead.push((key.to_string(), n));
    }
}

/// What the gauges and `max_queued` read without touching the file.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) open: HashMap<String, i64>,
    pub(super) pending: HashMap<String, i64>,
    pub(super) dead: HashMap<String, i64>,
}

impl Counts {
    pub(super) fn apply(&mut self, d: &Deltas) {
        for (map, changes) in [
            (&mut self.open, &d.open),
            (&mut self.pending, &d.pending),
            (&mut self.dead, &d.dead),
        ] {
            for (k, n) in changes {
                *map.entry(k.clone()).or_default() += n;
            }
        }
    }
}
