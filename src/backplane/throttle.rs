//! Cluster-wide throttle state for the event flows: budget thresholds, provider-health
//! hysteresis, webhook circuit breakers, terminal-task markers and storm-protection token
//! buckets.
//!
//! Each decision is atomic: one Lua call on Redis, one critical section on the in-process
//! bus, with the same rules written once for each (the Lua mirrors the Rust below).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures within the window that open the breaker.
    pub failures: u32,
    /// The failure window.
    pub window: Duration,
    /// How long the breaker stays open before a test is allowed (half-open).
    pub half_open_after: Duration,
}

/// One breaker state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// `Closed`, `Open` or `HalfOpen`.
    pub from: String,
    /// `Closed`, `Open` or `HalfOpen`.
    pub to: String,
    /// Failures in the window at the change.
    pub failures: i64,
    /// When a test is allowed (ms since the epoch), when it opened.
    pub next_test_at_ms: Option<u64>,
}

/// What the hysteresis decided for one health result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthVerdict {
    /// Announce the new status.
    pub announce: bool,
    /// The status announced before, if any.
    pub previous: Option<String>,
}

#[derive(Debug, Default)]
struct HealthState {
    announced: Option<String>,
    candidate: Option<String>,
    streak: u32,
}

#[derive(Debug)]
struct Breaker {
    state: &'static str,
    opened_ms: u64,
    failures: VecDeque<u64>,
}

/// The in-process version of the throttle state.
#[derive(Debug, Default)]
pub struct MemoryThrottle {
    budget: HashMap<String, BTreeSet<u32>>,
    health: HashMap<String, HealthState>,
    breakers: HashMap<String, Breaker>,
    done: HashMap<String, Instant>,
    buckets: HashMap<String, (f64, Instant)>,
}

impl MemoryThrottle {
    /// Thresholds newly crossed (ascending); all are re-armed below `rearm_below`.
    pub fn budget(
        &mut self,
        key: &str,
        percent: f64,
        thresholds: &[u32],
        rearm_below: f64,
    ) -> Vec<u32> {
        let fired_set = self.budget.entry(key.to_owned()).or_default();
        let fired: Vec<u32> = thresholds
            .iter()
            .copied()
            .filter(|t| percent >= f64::from(*t) && fired_set.insert(*t))
            .collect();
        if percent < rearm_below {
            self.budget.remove(key);
        }
        fired
    }

    /// Takes back announced thresholds.
    pub fn unmark_budget(&mut self, key: &str, thresholds: &[u32]) {
        if let Some(set) = self.budget.get_mut(key) {
            for t in thresholds {
                set.remove(t);
            }
        }
    }

    /// Applies one health result.
    pub fn health(&mut self, key: &str, status: &str, needed: u32) -> HealthVerdict {
        let h = self.health.entry(key.to_owned()).or_default();
        let previous = h.announced.clone();
        match &h.announced {
            None => {
                h.announced = Some(status.to_owned());
                h.candidate = None;
                h.streak = 0;
                HealthVerdict {
                    announce: true,
                    previous,
                }
            }
            Some(a) if a == status => {
                h.candidate = None;
                h.streak = 0;
                HealthVerdict {
                    announce: false,
                    previous,
                }
            }
            Some(_) => {
                if h.candidate.as_deref() == Some(status) {
                    h.streak += 1;
                } else {
                    h.candidate = Some(status.to_owned());
                    h.streak = 1;
                }
                if h.streak >= needed {
                    h.announced = Some(status.to_owned());
                    h.candidate = None;
                    h.streak = 0;
                    HealthVerdict {
                        announce: true,
                        previous,
                    }
                } else {
                    HealthVerdict {
                        announce: false,
                        previous,
                    }
                }
            }
        }
    }

    /// Applies one delivery outcome to a URL's breaker; returns its state changes.
    pub fn breaker(
        &mut self,
        key: &str,
        success: bool,
        now_ms: u64,
        s: BreakerSettings,
    ) -> Vec<BreakerTransition> {
        let b = self
            .breakers
            .entry(key.to_owned())
            .or_insert_with(|| Breaker {
                state: "Closed",
                opened_ms: 0,
                failures: VecDeque::new(),
            });
        let window = u64::try_from(s.window.as_millis()).unwrap_or(u64::MAX);
        let half_open = u64::try_from(s.half_open_after.as_millis()).unwrap_or(u64::MAX);
        while b
            .failures
            .front()
            .is_some_and(|t| *t <= now_ms.saturating_sub(window))
        {
            b.failures.pop_front();
        }
        let mut out = Vec::new();
        let mut change = |b: &mut Breaker, to: &'static str, next: Option<u64>| {
            out.push(BreakerTransition {
                from: b.state.to_owned(),
                to: to.to_owned(),
                failures: b.failures.len() as i64,
                next_test_at_ms: next,
            });
            b.state = to;
        };
        if b.state == "Open" && now_ms >= b.opened_ms.saturating_add(half_open) {
            change(b, "HalfOpen", None);
        }
        if success {
            if b.state != "Closed" {
                change(b, "Closed", None);
            }
            b.failures.clear();
        } else {
            b.failures.push_back(now_ms);
            let n = b.failures.len();
            if b.state == "HalfOpen" || (b.state == "Closed" && n >= s.failures as usize) {
                change(b, "Open", Some(now_ms + half_open));
                b.opened_ms = now_ms;
            }
        }
        out
    }

    /// Marks a task done (for `ttl`).
    pub fn mark_done(&mut self, key: &str, ttl: Duration) {
        let now = Instant::now();
        self.done.retain(|_, until| *until > now);
        self.done.insert(key.to_owned(), now + ttl);
    }

    /// Whether a task is marked done.
    pub fn is_done(&self, key: &str) -> bool {
        self.done
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Takes a token from a bucket; false when it is empty.
    pub fn take(&mut self, key: &str, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let (tokens, last) = self.buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Budget thresholds: KEYS = `[set]`; ARGV = `[percent, rearm_below, thresholds...]`.
pub const BUDGET_LUA: &str = r"
local pct = tonumber(ARGV[1])
local fired = {}
for i = 3, #ARGV do
  if pct >= tonumber(ARGV[i]) and redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    table.insert(fired, ARGV[i])
  end
end
if pct < tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], 7776000000) end
return fired
";

/// Health hysteresis: KEYS = `[hash]`; ARGV = `[status, needed]`. Returns `{announce, previous}`.
pub const HEALTH_LUA: &str = r"
local s = ARGV[1]
local announced = redis.call('HGET', KEYS[1], 'announced')
if not announced then
  redis.call('HSET', KEYS[1], 'announced', s, 'candidate', '', 'streak', 0)
  return {1, ''}
end
if s == announced then
  redis.call('HSET', KEYS[1], 'candidate', '', 'streak', 0)
  return {0, announced}
end
local cand = redis.call('HGET', KEYS[1], 'candidate')
local streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0')
if cand == s then streak = streak + 1 else cand = s; streak = 1 end
if streak >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'announced', s, 'candidate', '', 'streak', 0)
  return {1, announced}
end
redis.call('HSET', KEYS[1], 'candidate', cand, 'streak', streak)
return {0, announced}
";

/// Circuit breaker: KEYS = `[hash, failure zset]`; ARGV = `[success 1/0, threshold,
/// window ms, half-open ms, unique member]`. Uses Redis's clock so every node agrees.
/// Returns flattened transitions `{from, to, failures, next_test_ms}`.
pub const BREAKER_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'Closed'
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened') or '0')
local half = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
local out = {}
local function change(to, nxt)
  table.insert(out, state); table.insert(out, to)
  table.insert(out, redis.call('ZCARD', KEYS[2])); table.insert(out, nxt)
  state = to
end
if state == 'Open' and now >= opened + half then change('HalfOpen', 0) end
if ARGV[1] == '1' then
  if state ~= 'Closed' then change('Closed', 0) end
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  local n = redis.call('ZCARD', KEYS[2])
  if state == 'HalfOpen' or (state == 'Closed' and n >= tonumber(ARGV[2])) then
    change('Open', now + half)
    opened = now
  end
end
redis.call('HSET', KEYS[1], 'state', state, 'opened', opened)
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return out
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_thresholds_fire_once_and_rearm_below_half() {
        let mut m = MemoryThrottle::default();
        let t = [50, 75, 90, 100];
        assert_eq!(m.budget("k", 95.0, &t, 50.0), vec![50, 75, 90]);
        assert!(m.budget("k", 96.0, &t, 50.0).is_empty());
        assert_eq!(m.budget("k", 100.0, &t, 50.0), vec![100]);
        assert!(m.budget("k", 10.0, &t, 50.0).is_empty());
        assert_eq!(m.budget("k", 60.0, &t, 50.0), vec![50]);
    }

    #[test]
    fn an_unmarked_threshold_fires_again() {
        let mut m = MemoryThrottle::default();
        assert_eq!(m.budget("k", 80.0, &[50, 75], 50.0), vec![50, 75]);
        m.unmark_budget("k", &[75]);
        assert_eq!(
            m.budget("k", 80.0, &[50, 75], 50.0),
            vec![75],
            "only the unsent one"
        );
    }

    #[test]
    fn health_announces_first_then_only_after_three_identical_changes() {
        let mut m = MemoryThrottle::default();
        assert!(m.health("p", "Healthy", 3).announce);
        assert!(!m.health("p", "Unhealthy", 3).announce);
        assert!(
            !m.health("p", "Healthy", 3).announce,
            "flapping resets the streak"
        );
        assert!(!m.health("p", "Unhealthy", 3).announce);
        assert!(!m.health("p", "Unhealthy", 3).announce);
        let v = m.health("p", "Unhealthy", 3);
        assert!(v.announce);
        assert_eq!(v.previous.as_deref(), Some("Healthy"));
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let mut m = MemoryThrottle::default();
        let s = BreakerSettings {
            failures: 3,
            window: Duration::from_secs(60),
            half_open_after: Duration::from_secs(10),
        };
        assert!(m.breaker("u", false, 1_000, s).is_empty());
        assert!(m.breaker("u", false, 2_000, s).is_empty());
        let open = m.breaker("u", false, 3_000, s);
        assert_eq!(
            (open[0].from.as_str(), open[0].to.as_str(), open[0].failures),
            ("Closed", "Open", 3)
        );
        assert!(m.breaker("u", false, 4_000, s).is_empty(), "still open");
        let t = m.breaker("u", false, 14_000, s);
        assert_eq!(
            t.iter().map(|x| x.to.as_str()).collect::<Vec<_>>(),
            vec!["HalfOpen", "Open"]
        );
        let t = m.breaker("u", true, 25_000, s);
        assert_eq!(
            t.iter().map(|x| x.to.as_str()).collect::<Vec<_>>(),
            vec!["HalfOpen", "Closed"]
        );
        assert!(m.breaker("u", true, 26_000, s).is_empty());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut m = MemoryThrottle::default();
        let s = BreakerSettings {
            failures: 2,
            window: Duration::from_secs(1),
            half_open_after: Duration::from_secs(10),
        };
        assert!(m.breaker("u", false, 1_000, s).is_empty());
        assert!(m.breaker("u", false, 5_000, s).is_empty());
        assert_eq!(m.breaker("u", false, 5_500, s).len(), 1);
    }
}
