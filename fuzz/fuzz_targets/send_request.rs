//! A whole send request, through the function the send routes run
//! (`SendRequest::parse`): the name in the path, `X-Correlation-Id`, `traceparent`,
//! `Idempotency-Key` and the body. Arbitrary input never panics; a refused request is
//! refused by the first check it fails, in the routes' order; an accepted one carries
//! what it sent, and the Redis names built from it have a fixed size.
//!
//! Input: a selector byte (which route), then name, correlation id, traceparent and
//! idempotency key separated by 0xFF (never part of valid UTF-8, so never of a name), then
//! the body (the rest). An empty header part means no header.

#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hubcast::http::api::{PublishBody, SendPath, SendRequest};
use hubcast::http::error::ApiError;
use hubcast::http::gate::PublisherScope;
use hubcast::ids::{ConnectionId, GroupName, UserId};
use hubcast::keys::Keys;
use hubcast::node::Audience;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(5, |b| *b == 0xFF);
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    let mut kept: Vec<Option<HeaderValue>> = Vec::new();
    for header in ["x-correlation-id", "traceparent", "idempotency-key"] {
        let bytes = parts.next().unwrap_or_default();
        // Bytes no header value may hold: the HTTP layer refuses such a request first.
        let value = (!bytes.is_empty())
            .then(|| HeaderValue::from_bytes(bytes).ok())
            .flatten();
        if let Some(v) = &value {
            headers.insert(header, v.clone());
        }
        kept.push(value);
    }
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let path = match selector % 4 {
        0 => SendPath::Hub,
        1 => SendPath::Group(&name),
        2 => SendPath::User(&name),
        _ => SendPath::Connection(&name),
    };
    let scope = PublisherScope("fuzz".into());
    let result = SendRequest::parse(path, &headers, &scope, Ok(body.clone()));

    let name_ok = match path {
        SendPath::Hub => true,
        SendPath::Group(n) => GroupName::parse(n).is_ok(),
        SendPath::User(n) => UserId::parse(n).is_ok(),
        SendPath::Connection(n) => ConnectionId::parse(n).is_some(),
    };
    let req = match result {
        Err(ApiError::InvalidName { .. } | ApiError::UnknownConnection(_)) => {
            assert!(!name_ok, "a valid name was refused");
            return;
        }
        Err(ApiError::BadRequest(_)) => {
            assert!(name_ok, "a bad name must be refused before anything else");
            return;
        }
        Err(other) => panic!("unexpected refusal {other:?}"),
        Ok(req) => req,
    };
    assert!(name_ok);
    match (&req.audience, path) {
        (Audience::Hub, SendPath::Hub) => {}
        (Audience::Group(g), SendPath::Group(n)) => assert_eq!(g.as_str(), n),
        (Audience::User(u), SendPath::User(n)) => assert_eq!(u.as_str(), n),
        (Audience::Connection(c), SendPath::Connection(n)) => assert_eq!(c.as_str(), n),
        (a, p) => panic!("{p:?} gave {a:?}"),
    }
    assert_eq!(PublishBody::parse(&body).as_ref(), Ok(&req.body));
    let c = req.correlation.as_str();
    assert!((1..=128).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_graphic()));
    if let Some(sent) = &kept[0] {
        assert_eq!(c.as_bytes(), sent.as_bytes(), "X-Correlation-Id is kept as sent");
    }
    match (&req.idempotency, &kept[2]) {
        (None, None) => {}
        (Some(k), Some(sent)) => {
            assert_eq!(k.key.as_bytes(), sent.as_bytes());
            assert_eq!(k.scope, "fuzz");
            let keys = Keys::new("p");
            assert_eq!(keys.idempotency(&k.scope, &k.key).len(), "p:idem:fuzz:".len() + 32);
        }
        (got, sent) => panic!("key {got:?} for header {sent:?}"),
    }
    if let Audience::Group(g) = &req.audience {
        let keys = Keys::new("p");
        let bucket = keys.rate("tasks", g.as_str(), &req.body.target);
        assert_eq!(bucket.len(), "p:throttle:rate:tasks:".len() + 64);
    }
});
