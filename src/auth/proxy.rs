//! The connect proxy: the gateway's own backend says who a credential is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

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

/// Asks the gateway's backend who a credential is: `POST {url}` with
/// `{"credential": …, "hub": …}`. 200 with `{user?, vkey?, groups?}` lets the client in;
/// any other status refuses it; no answer within the timeout refuses it too. Answers are
/// cached briefly per (hub, credential).
#[derive(Debug)]
pub struct ConnectProxy {
    url: String,
    client: reqwest::Client,
    cache_ttl: Duration,
    cache: Mutex<HashMap<(String, String), CachedAnswer>>,
}

/// A connect-proxy answer and when it was received.
type CachedAnswer = (Instant, Result<Identity, AuthError>);

/// Most cached connect-proxy answers kept; the cache is cleared when it is full.
const PROXY_CACHE_MAX: usize = 10_000;

impl ConnectProxy {
    /// A proxy to `url` with a request timeout and a cache lifetime.
    pub fn new(url: String, timeout: Duration, cache_ttl: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            url,
            client,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Who `credential` is on `hub`.
    ///
    /// # Errors
    /// [`AuthError::Refused`] or [`AuthError::BackendUnavailable`].
    pub async fn identify(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        let key = (hub.to_owned(), credential.to_owned());
        if let Some((at, answer)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < self.cache_ttl {
                return answer.clone();
            }
        }
        let answer = self.ask(hub, credential).await;
        // Outages are not cached: the next client asks again.
        if !matches!(answer, Err(AuthError::BackendUnavailable)) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= PROXY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn ask(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        let resp = self
            .client
            .post(&self.url)
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
        Ok(Identity {
            user: answer.user.as_deref().and_then(|u| UserId::parse(u).ok()),
            virtual_key: match answer.vkey {
                Some(Value::String(s)) if !s.is_empty() => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            groups: answer.groups,
        })
    }
}
