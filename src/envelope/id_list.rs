//! A list of connection ids ahead of a body: what [`super::Kind::DeliverExcept`] and
//! [`super::Kind::CloseMembers`] carry, so the ids travel with a message encoded once.

use bytes::Bytes;

/// Most connection ids a [`with_ids`] list holds.
pub const MAX_LISTED_IDS: usize = 1024;

/// A list of connection ids ahead of `rest`: a big-endian `u16` count, then each id as a
/// length byte and its bytes (ids longer than 255 bytes are cut; ours never are).
pub fn with_ids<'a>(ids: impl ExactSizeIterator<Item = &'a [u8]>, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + ids.len() * 24 + rest.len());
    out.extend_from_slice(&(ids.len().min(MAX_LISTED_IDS) as u16).to_be_bytes());
    for id in ids.take(MAX_LISTED_IDS) {
        let id = &id[..id.len().min(255)];
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }
    out.extend_from_slice(rest);
    out
}

/// The ids [`with_ids`] put ahead of a body, and the rest; `None` when it is truncated.
pub fn split_ids(body: &Bytes) -> Option<(Vec<Bytes>, Bytes)> {
    let count = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let mut at = 2;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(*body.get(at)?);
        let end = at + 1 + len;
        if body.len() < end {
            return None;
        }
        ids.push(body.slice(at + 1..end));
        at = end;
    }
    Some((ids, body.slice(at..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_list_comes_back_with_the_rest_of_the_body() {
        let ids: [&[u8]; 2] = [b"a", b"conn-2"];
        let body = Bytes::from(with_ids(ids.into_iter(), b"record"));
        let (got, rest) = split_ids(&body).unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"conn-2")]
        );
        assert_eq!(&rest[..], b"record");
        let empty = Bytes::from(with_ids(std::iter::empty(), b""));
        assert_eq!(split_ids(&empty), Some((Vec::new(), Bytes::new())));
        assert_eq!(split_ids(&body.slice(..4)), None);
    }
}
