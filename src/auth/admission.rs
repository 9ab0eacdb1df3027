//! Admission of WebSocket handshakes: a slot of the node's concurrent-handshake limit,
//! taken only after the credential checked out, and at most so many pending handshakes
//! per credential and per source address.
//!
//! Without the per-credential and per-source caps, one valid credential (a token without
//! `sub`, the master key) or one address opening upgrades that never send the SignalR
//! handshake holds every slot for the handshake timeout, and well-behaved clients are
//! refused.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// The node has as many handshakes pending as allowed.
    Node,
    /// This credential has as many handshakes pending as allowed.
    Credential,
    /// This source address has as many handshakes pending as allowed.
    Source,
}

/// The node's pending handshakes: in total, per credential digest and per source.
#[derive(Debug)]
pub struct HandshakeAdmission {
    capacity: usize,
    node: Arc<Semaphore>,
    per_credential: Arc<Pending<[u8; 16]>>,
    per_source: Arc<Pending<IpAddr>>,
}

/// Pending handshakes per key, each key at most `max`.
#[derive(Debug)]
struct Pending<K> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Pending<K> {
    fn take(self: &Arc<Self>, key: K) -> Option<Held<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Held {
            pending: self.clone(),
            key,
        })
    }
}

/// One pending handshake of a key; released when dropped.
#[derive(Debug)]
struct Held<K: Hash + Eq> {
    pending: Arc<Pending<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self
            .pending
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // Keys are dropped at zero: the map holds only handshakes in progress.
                counts.remove(&self.key);
            }
        }
    }
}

/// A pending handshake's place in every limit; all are released when it is dropped
/// (after the SignalR handshake, or its timeout).
#[derive(Debug)]
pub struct HandshakeSlot {
    _node: OwnedSemaphorePermit,
    _credential: Option<Held<[u8; 16]>>,
    _source: Option<Held<IpAddr>>,
}

impl HandshakeAdmission {
    /// At most `per_node` pending handshakes in all, `per_credential` per credential and
    /// `per_source` per source address.
    pub fn new(per_node: usize, per_credential: usize, per_source: usize) -> Self {
        Self {
            capacity: per_node,
            node: Arc::new(Semaphore::new(per_node)),
            per_credential: Arc::new(Pending {
                max: per_credential,
                counts: Mutex::new(HashMap::new()),
            }),
            per_source: Arc::new(Pending {
                max: per_source,
                counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admits a handshake for `credential` (already verified; `None` on anonymous hubs)
    /// from `source` (`None` when the address is not known).
    ///
    /// # Errors
    /// The first limit that is reached: source, then credential, then node, so that a
    /// flood from one source or credential is refused before it counts against the node.
    pub fn admit(
        &self,
        credential: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<HandshakeSlot, AdmissionRefusal> {
        let source = match source {
            Some(ip) => Some(self.per_source.take(ip).ok_or(AdmissionRefusal::Source)?),
            None => None,
        };
        let credential = match credential {
            Some(c) => Some(
                self.per_credential
                    .take(digest(c))
                    .ok_or(AdmissionRefusal::Credential)?,
            ),
            None => None,
        };
        let node = self
            .node
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdmissionRefusal::Node)?;
        Ok(HandshakeSlot {
            _node: node,
            _credential: credential,
            _source: source,
        })
    }

    /// Handshakes pending on this node.
    pub fn pending(&self) -> usize {
        self.capacity - self.node.available_permits()
    }
}

/// A credential's digest: the map holds no secret and a fixed size per key.
fn digest(credential: &str) -> [u8; 16] {
    let d = sha2::Sha256::digest(credential.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_and_releases() {
        let a = HandshakeAdmission::new(3, 2, 2);
        let ip1: IpAddr = [10, 0, 0, 1].into();
        let ip2: IpAddr = [10, 0, 0, 2].into();
        let first = a.admit(Some("k1"), Some(ip1)).unwrap();
        let _second = a.admit(Some("k1"), Some(ip2)).unwrap();
        assert_eq!(
            a.admit(Some("k1"), Some(ip2)).unwrap_err(),
            AdmissionRefusal::Credential
        );
        let _third = a.admit(Some("k2"), Some(ip1)).unwrap();
        assert_eq!(
            a.admit(Some("k3"), Some(ip1)).unwrap_err(),
            AdmissionRefusal::Source
        );
        assert_eq!(
            a.admit(Some("k3"), None).unwrap_err(),
            AdmissionRefusal::Node
        );
        assert_eq!(a.pending(), 3, "refusals hold nothing");
        drop(first);
        assert!(a.admit(Some("k1"), Some(ip1)).is_ok());
        assert_eq!(a.pending(), 2, "the slot above was dropped at once");
    }
}
