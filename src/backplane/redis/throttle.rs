//! The event flows' throttle decisions on Redis: each is one script call, so every node
//! sees the same answer.

use std::time::Duration;

use super::RedisBackplane;
use crate::backplane::throttle::{BreakerSettings, BreakerTransition, HealthVerdict};
use crate::backplane::BackplaneError;

impl RedisBackplane {
    pub(crate) async fn budget(
        &self,
        key: &str,
        percent: f64,
        thresholds: &[u32],
        rearm: f64,
    ) -> Result<Vec<u32>, BackplaneError> {
        let s = self.scripts.clone();
        let fired: Vec<u32> = self
            .run("budget", |mut c| async move {
                let mut inv = s.budget.key(key);
                inv.arg(percent).arg(rearm);
                for t in thresholds {
                    inv.arg(*t);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(fired)
    }

    pub(crate) async fn budget_unmark(
        &self,
        key: &str,
        thresholds: &[u32],
    ) -> Result<(), BackplaneError> {
        self.run("budget_unmark", |mut c| async move {
            redis::cmd("SREM")
                .arg(key)
                .arg(thresholds)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    pub(crate) async fn health(
        &self,
        key: &str,
        status: &str,
        needed: u32,
    ) -> Result<HealthVerdict, BackplaneError> {
        let s = self.scripts.clone();
        let (announce, previous): (i64, String) = self
            .run("health", |mut c| async move {
                s.health
                    .key(key)
                    .arg(status)
                    .arg(needed)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(HealthVerdict {
            announce: announce == 1,
            previous: (!previous.is_empty()).then_some(previous),
        })
    }

    pub(crate) async fn breaker(
        &self,
        key: &str,
        failures_key: &str,
        success: bool,
        settings: BreakerSettings,
    ) -> Result<Vec<BreakerTransition>, BackplaneError> {
        let s = self.scripts.clone();
        let member = crate::ids::random_token();
        let flat: Vec<redis::Value> = self
            .run("breaker", |mut c| async move {
                s.breaker
                    .key(key)
                    .key(failures_key)
                    .arg(if success { "1" } else { "0" })
                    .arg(settings.failures)
                    .arg(u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX))
                    .arg(u64::try_from(settings.half_open_after.as_millis()).unwrap_or(u64::MAX))
                    .arg(member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |v: &redis::Value| -> String {
            redis::from_redis_value::<String>(v.clone()).unwrap_or_default()
        };
        let int =
            |v: &redis::Value| -> i64 { redis::from_redis_value::<i64>(v.clone()).unwrap_or(0) };
        Ok(flat
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| BreakerTransition {
                from: text(&c[0]),
                to: text(&c[1]),
                failures: int(&c[2]),
                next_test_at_ms: u64::try_from(int(&c[3])).ok().filter(|n| *n > 0),
            })
            .collect())
    }

    pub(crate) async fn mark_done(&self, key: &str, ttl: Duration) -> Result<(), BackplaneError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.run("mark_done", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg("1")
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}
