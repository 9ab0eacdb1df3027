//! Single use of connection tokens on this node: the ids of tokens already used, kept
//! until the tokens expire (after that the token is refused as expired anyway).
//!
//! This is the node-local half. On Redis, the upgrade also records each use cluster-wide
//! (`{p}:idem:connection-token:{digest}` for the token's remaining lifetime), and while a
//! connection is open its id is registered cluster-wide, so a token is refused on every
//! node once used.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ids::ConnectionId;

/// Connection tokens already used on this node, until their expiry.
#[derive(Debug, Default)]
pub struct UsedTokens {
    inner: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    ids: HashSet<ConnectionId>,
    /// Expiries, soonest first, for pruning.
    expiries: BinaryHeap<Reverse<(Instant, ConnectionId)>>,
}

impl UsedTokens {
    /// Records the use of the token for `id`, valid for `remaining`; `false` when it was
    /// used before.
    pub fn first_use(&self, id: &ConnectionId, remaining: Duration) -> bool {
        let now = Instant::now();
        let mut used = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Reverse((at, _))) = used.expiries.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, gone))) = used.expiries.pop() {
                used.ids.remove(&gone);
            }
        }
        if !used.ids.insert(id.clone()) {
            return false;
        }
        used.expiries.push(Reverse((now + remaining, id.clone())));
        true
    }

    /// How many uses are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }

    /// Whether no use is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
