//! The connect proxy: the gateway's own backend says who a credential is.
//!
//! Anonymous clients can make the node call the backend, so each call is bounded: the
//! credential's length, the calls in flight (over the cap a client is refused at once,
//! never queued), and the cache, which is keyed by a digest of the credential (never the
//! credential itself), holds refusals briefly, and drops its oldest entries beyond a
//! count and a byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;
use tokio::sync::Semaphore;

use crate::ids::UserId;

use super::{AuthError, Identity};

/// The answer a connect-proxy backend gives.
#[derive(Debug, Clone, Deserialize)]
struct ProxyAnswer {
    #[serde(default, alias = "userId")]
    user: Option<String>,
    #[serde(default, alias = "virtualKey", alias = "virtualKeyId")]
    vkey: Option<Value>,
    #[serde(default)]
    groups: Vec<String>,
}

/// How the connect proxy asks and caches.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The backend's URL.
    pub url: String,
    /// Longest a backend call may take.
    pub timeout: Duration,
    /// How long an answer that lets a client in is reused.
    pub answer_ttl: Duration,
    /// How long a refusal is reused.
    pub refusal_ttl: Duration,
    /// Longest credential asked about, in bytes.
    pub max_credential_bytes: usize,
    /// Most cached answers.
    pub cache_entries: usize,
    /// Most bytes of cached answers (an estimate).
    pub cache_bytes: usize,
    /// Most backend calls in flight.
    pub max_concurrent: usize,
}

/// Asks the gateway's backend who a credential is: `POST {url}` with
/// `{"credential": …, "hub": …}`. 200 with `{user?, vkey?, groups?}` lets the client in;
/// any other status refuses it; no answer within the timeout refuses it too.
#[derive(Debug)]
pub struct ConnectProxy {
    settings: ProxySettings,
    client: reqwest::Client,
    in_flight: Semaphore,
    cache: Mutex<Cache>,
}

/// A digest of (hub, credential).
type CacheKey = [u8; 32];

/// Cached answers, oldest first in `order`.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<CacheKey, Entry>,
    /// Insertion order: key and insertion number. A key inserted again leaves a stale
    /// element behind, skipped when it comes up.
    order: VecDeque<(CacheKey, u64)>,
    bytes: usize,
    inserted: u64,
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    answer: Result<Identity, AuthError>,
    bytes: usize,
    number: u64,
}

/// Bytes an entry costs besides its identity: the key twice (map and order), the
/// entry, and the maps' overhead, roughly.
const ENTRY_OVERHEAD: usize = 160;

fn entry_bytes(answer: &Result<Identity, AuthError>) -> usize {
    ENTRY_OVERHEAD
        + answer.as_ref().map_or(0, |i| {
            i.user.as_ref().map_or(0, |u| u.as_str().len())
                + i.virtual_key.as_ref().map_or(0, String::len)
                + i.groups.iter().map(|g| g.len() + 24).sum::<usize>()
        })
}

impl Cache {
    fn get(&mut self, key: &CacheKey) -> Option<Result<Identity, AuthError>> {
        let entry = self.entries.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry.answer.clone());
        }
        if let Some(gone) = self.entries.remove(key) {
            self.bytes -= gone.bytes;
        }
        None
    }

    fn insert(
        &mut self,
        key: CacheKey,
        answer: Result<Identity, AuthError>,
        ttl: Duration,
        max_entries: usize,
        max_bytes: usize,
    ) {
        self.inserted += 1;
        let bytes = entry_bytes(&answer);
        let entry = Entry {
            expires: Instant::now() + ttl,
            answer,
            bytes,
            number: self.inserted,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.order.push_back((key, self.inserted));
        // Oldest first: an entry inserted earlier also expires no later than one of the
        // same kind inserted since.
        while self.entries.len() > max_entries
            || self.bytes > max_bytes
            || self.order.len() > 2 * max_entries
        {
            let Some((old, number)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.number == number) {
                if let Some(gone) = self.entries.remove(&old) {
                    self.bytes -= gone.bytes;
                }
            }
        }
    }
}

impl ConnectProxy {
    /// A proxy with these settings.
    pub fn new(settings: ProxySettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .unwrap_or_default();
        Self {
            client,
            in_flight: Semaphore::new(settings.max_concurrent),
            cache: Mutex::new(Cache::default()),
            settings,
        }
    }

    /// Who `credential` is on `hub`.
    ///
    /// # Errors
    /// [`AuthError::TooLong`] (the backend is not asked), [`AuthError::Refused`],
    /// [`AuthError::UnusableUser`], [`AuthError::BackendBusy`] or
    /// [`AuthError::BackendUnavailable`].
    pub async fn identify(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        if credential.len() > self.settings.max_credential_bytes {
            return Err(AuthError::TooLong);
        }
        let key = cache_key(hub, credential);
        if let Some(answer) = self.lock().get(&key) {
            return answer;
        }
        // Over the cap the client is refused at once: waiting would let a flood of
        // distinct credentials queue every legitimate client behind it.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(AuthError::BackendBusy);
        };
        let answer = self.ask(hub, credential).await;
        let ttl = match &answer {
            Ok(_) => Some(self.settings.answer_ttl),
            Err(AuthError::Refused | AuthError::UnusableUser) => Some(self.settings.refusal_ttl),
            // Outages are not cached: the next client asks again.
            Err(_) => None,
        };
        if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
            self.lock().insert(
                key,
                answer.clone(),
                ttl,
                self.settings.cache_entries,
                self.settings.cache_bytes,
            );
        }
        answer
    }

    /// Cached answers and their estimated bytes.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.entries.len(), cache.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        let resp = self
            .client
            .post(&self.settings.url)
            .json(&serde_json::json!({ "credential": credential, "hub": hub }))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "connect proxy unreachable; refusing the connection");
                AuthError::BackendUnavailable
            })?;
        let status = resp.status();
        if status.is_server_error() {
            tracing::warn!(%status, "connect proxy failed; refusing the connection");
            return Err(AuthError::BackendUnavailable);
        }
        if !status.is_success() {
            return Err(AuthError::Refused);
        }
        let answer: ProxyAnswer = resp.json().await.map_err(|e| {
            tracing::warn!(error = %e, "connect proxy answered with something that is not an identity");
            AuthError::BackendUnavailable
        })?;
        let user = match answer.user.as_deref() {
            None => None,
            Some(u) => Some(UserId::parse(u).map_err(|_| {
                tracing::warn!("connect proxy answered with a user id that cannot be used; refusing the connection");
                AuthError::UnusableUser
            })?),
        };
        Ok(Identity {
            user,
            virtual_key: match answer.vkey {
                Some(Value::String(s)) if !s.is_empty() => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            groups: answer.groups,
        })
    }
}

/// The cache key: a digest, so a credential of any length costs 32 bytes and the cache
/// holds no credential.
fn cache_key(hub: &str, credential: &str) -> CacheKey {
    let mut h = sha2::Sha256::new();
    h.update((hub.len() as u64).to_be_bytes());
    h.update(hub.as_bytes());
    h.update(credential.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> Result<Identity, AuthError> {
        Ok(Identity {
            user: Some(UserId::parse(&format!("u{n}")).unwrap()),
            ..Identity::default()
        })
    }

    #[test]
    fn the_cache_drops_its_oldest_entries_beyond_its_bounds() {
        let mut c = Cache::default();
        let ttl = Duration::from_secs(60);
        for n in 0..100 {
            c.insert(cache_key("h", &n.to_string()), id(n), ttl, 10, usize::MAX);
        }
        assert_eq!(c.entries.len(), 10);
        assert!(c.get(&cache_key("h", "99")).is_some());
        assert!(
            c.get(&cache_key("h", "0")).is_none(),
            "the oldest went first"
        );
        let budget = 5 * entry_bytes(&id(1));
        for n in 0..100 {
            c.insert(cache_key("b", &n.to_string()), id(n), ttl, 1000, budget);
        }
        assert!(
            c.bytes <= budget && c.entries.len() <= 5,
            "{} bytes",
            c.bytes
        );
        for _ in 0..100 {
            c.insert(cache_key("same", "x"), id(1), ttl, 10, usize::MAX);
        }
        assert!(
            c.order.len() <= 20,
            "re-inserting one key does not grow the queue"
        );
    }

    #[test]
    fn an_expired_entry_is_not_served() {
        let mut c = Cache::default();
        c.insert(
            cache_key("h", "x"),
            Err(AuthError::Refused),
            Duration::ZERO,
            10,
            usize::MAX,
        );
        assert!(c.get(&cache_key("h", "x")).is_none());
        assert_eq!(c.bytes, 0);
    }
}
