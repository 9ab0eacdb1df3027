//! Positioned publishes on Redis: the one-call publish (idempotency check, guard,
//! position, history, PUBLISH or SPUBLISH, all in the channel's slot), reading a
//! channel's history and head position, and the request-level idempotency records.

use std::time::Duration;

use bytes::Bytes;

use super::{unavailable, RedisBackplane};
use crate::backplane::outgoing::{Publish, PublishGuard, Published, Recorded};
use crate::backplane::BackplaneError;
use crate::envelope::{Envelope, Position};

/// History entries read per round trip.
const HISTORY_PAGE: usize = 100;

impl RedisBackplane {
    pub(crate) async fn publish_message(
        &self,
        msg: &Publish<'_>,
    ) -> Result<Published, BackplaneError> {
        let s = self.scripts.clone();
        let position = self.keys.position(msg.channel);
        let history = self.keys.history(msg.channel);
        let h = self.options.history;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let history_len = if msg.history { h.messages } else { 0 };
        let (guard, guard_key, rate, burst) = match msg.guard {
            PublishGuard::None => ("none", position.clone(), 0.0, 0.0),
            PublishGuard::UnlessDone(key) => ("done", key.to_owned(), 0.0, 0.0),
            PublishGuard::Rate {
                bucket,
                per_second,
                burst,
            } => ("rate", bucket.to_owned(), per_second, burst),
        };
        let (idem_key, idem_record, idem_ttl) = match &msg.idempotency {
            Some(i) => (
                i.key.to_owned(),
                format!("{}|{}", i.fingerprint, i.correlation),
                ms(i.ttl),
            ),
            None => (position.clone(), String::new(), 0),
        };
        let epoch = crate::ids::random_token();
        let reply: Vec<redis::Value> = self
            .run("publish", |mut c| async move {
                s.publish
                    .key(idem_key)
                    .key(guard_key)
                    .key(&position)
                    .key(&history)
                    .arg(msg.channel)
                    .arg(&msg.head[..])
                    .arg(&msg.body[..])
                    .arg(epoch)
                    .arg(ms(h.position_ttl))
                    .arg(history_len)
                    .arg(ms(h.ttl))
                    .arg(idem_record)
                    .arg(idem_ttl)
                    .arg(guard)
                    .arg(rate)
                    .arg(burst)
                    .arg(h.bytes)
                    .arg(self.publish_command)
                    .arg(if self.channels_move { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        parse_published(&reply)
            .ok_or_else(|| unavailable("unexpected reply from the publish script"))
    }

    pub(crate) async fn history(
        &self,
        channel: &str,
        epoch: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Vec<Bytes>, BackplaneError> {
        let key = self.keys.history(channel);
        // In pages, so one reply never carries the whole history at once.
        let mut entries: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let mut start = from;
        while start <= to {
            let key = key.clone();
            let page: Vec<(String, Vec<Vec<u8>>)> = self
                .run("xrange", |mut c| async move {
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(format!("{start}-0"))
                        .arg(format!("{to}-0"))
                        .arg("COUNT")
                        .arg(HISTORY_PAGE)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let last = page
                .last()
                .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok());
            let full = page.len() == HISTORY_PAGE;
            entries.extend(page);
            match last {
                Some(seq) if full => start = seq + 1,
                _ => break,
            }
        }
        // A stream of another epoch may still sit under the key for a moment; keep only
        // this epoch's messages.
        Ok(entries
            .into_iter()
            .filter_map(|(_, fields)| fields.into_iter().nth(1))
            .map(Bytes::from)
            .filter(|m| {
                Envelope::decode(m)
                    .ok()
                    .and_then(|e| e.position)
                    .is_some_and(|p| p.epoch[..] == *epoch)
            })
            .collect())
    }

    pub(crate) async fn head(&self, channel: &str) -> Result<Option<Position>, BackplaneError> {
        self.position_fields(channel, "e", "s").await
    }

    /// A position kept in the channel's position hash under two fields.
    async fn position_fields(
        &self,
        channel: &str,
        epoch_field: &'static str,
        seq_field: &'static str,
    ) -> Result<Option<Position>, BackplaneError> {
        let key = self.keys.position(channel);
        let (epoch, seq): (Option<Vec<u8>>, Option<u64>) = self
            .run("hmget", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(epoch_field)
                    .arg(seq_field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (epoch, seq) {
            (Some(epoch), Some(seq)) => Some(Position {
                epoch: Bytes::from(epoch),
                seq,
            }),
            _ => None,
        })
    }

    /// Records where a channel's previous stream ended (the `EPOCH_END` script).
    pub(crate) async fn record_epoch_end(
        &self,
        channel: &str,
        ended: &Position,
    ) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let key = self.keys.position(channel);
        self.run("epoch_end", |mut c| async move {
            s.epoch_end
                .key(key)
                .arg(&ended.epoch[..])
                .arg(ended.seq)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Where the stream before the channel's current one ended, as recorded.
    pub(crate) async fn previous_epoch(
        &self,
        channel: &str,
    ) -> Result<Option<Position>, BackplaneError> {
        self.position_fields(channel, "pe", "ps").await
    }

    pub(crate) async fn recall(&self, key: &str) -> Result<Option<String>, BackplaneError> {
        self.run("get", |mut c| async move {
            redis::cmd("GET").arg(key).query_async(&mut c).await
        })
        .await
    }

    pub(crate) async fn remember(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), BackplaneError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.run("set", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

/// Reads the publish script's reply (see [`scripts::PUBLISH`]).
fn parse_published(reply: &[redis::Value]) -> Option<Published> {
    let int = |v: &redis::Value| redis::from_redis_value::<i64>(v.clone()).ok();
    let bytes = |v: &redis::Value| redis::from_redis_value::<Vec<u8>>(v.clone()).ok();
    match int(reply.first()?)? {
        0 => Some(Published::Suppressed),
        1 => Some(Published::Sent {
            nodes: usize::try_from(int(reply.get(1)?)?).ok()?,
            position: Position {
                epoch: Bytes::from(bytes(reply.get(2)?)?),
                seq: u64::try_from(int(reply.get(3)?)?).ok()?,
            },
        }),
        2 => {
            let raw = String::from_utf8(bytes(reply.get(1)?)?).ok()?;
            Recorded::parse(&raw).map(Published::Repeat)
        }
        _ => None,
    }
}
