//! HS256 JSON Web Tokens: verifying a client's or publisher's token and signing one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;

use crate::ids::UserId;

use super::{now_secs, AuthError, HmacSha256, Identity};

/// Claims of a verified token.
#[derive(Debug, Clone, Default)]
pub struct Claims(pub serde_json::Map<String, Value>);

impl Claims {
    /// Turns client-token claims into an identity: `sub` (or `nameid`), `vkey` (string or
    /// number), `groups` (array of strings, or one string).
    ///
    /// # Errors
    /// [`AuthError::UnusableUser`] when `sub` (or `nameid`) is present but not a usable
    /// user id: dropping it would let the client past the per-user limit and out of
    /// reach of user sends.
    pub fn identity(&self) -> Result<Identity, AuthError> {
        let user = match self.0.get("sub").or_else(|| self.0.get("nameid")) {
            None => None,
            Some(Value::String(u)) => Some(UserId::parse(u).map_err(|_| AuthError::UnusableUser)?),
            Some(_) => return Err(AuthError::UnusableUser),
        };
        let virtual_key = match self.0.get("vkey") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let groups = match self.0.get("groups") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            user,
            virtual_key,
            groups,
        })
    }
}

/// Verifies an HS256 JWT against any of `keys`: signature, `exp`/`nbf` (60 s leeway),
/// and `aud` with `audience_ok` when the token has one (`require_aud` makes it mandatory).
///
/// # Errors
/// See [`AuthError`].
pub fn verify_jwt(
    token: &str,
    keys: &[&[u8]],
    require_exp: bool,
    require_aud: bool,
    audience_ok: impl Fn(&str) -> bool,
) -> Result<Claims, AuthError> {
    const LEEWAY: u64 = 60;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(AuthError::Invalid);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::Invalid)?;
    let signed = &token[..h.len() + 1 + p.len()];
    let valid = keys.iter().any(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            return false;
        };
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig).is_ok()
    });
    if !valid {
        return Err(AuthError::Invalid);
    }
    let claims: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)?;
    let now = now_secs();
    match claims.get("exp").map(Value::as_u64) {
        Some(Some(exp)) if exp + LEEWAY < now => return Err(AuthError::Expired),
        Some(Some(_)) => {}
        Some(None) => return Err(AuthError::Invalid),
        None if require_exp => return Err(AuthError::Invalid),
        None => {}
    }
    match claims.get("nbf").map(Value::as_u64) {
        Some(Some(nbf)) if nbf > now + LEEWAY => return Err(AuthError::Expired),
        Some(None) => return Err(AuthError::Invalid),
        _ => {}
    }
    let audience_matches = match claims.get("aud") {
        None => !require_aud,
        Some(Value::String(a)) => audience_ok(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(&audience_ok),
        Some(_) => return Err(AuthError::Invalid),
    };
    if !audience_matches {
        return Err(AuthError::WrongAudience);
    }
    Ok(Claims(claims))
}

/// Signs claims as an HS256 JWT (for tests and tooling).
pub fn sign_jwt(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}
