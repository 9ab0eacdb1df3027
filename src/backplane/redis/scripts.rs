//! Every Lua script the Redis backplane runs, loaded once per backplane. Each names keys
//! of one hash slot only, so it runs on one shard of a Redis Cluster. The throttle
//! scripts stay in [`crate::backplane::throttle`], beside the in-process rules they mirror.

use redis::Script;

use crate::backplane::throttle;

/// A join's first step, in the connection's slot: its record gains the group, unless
/// the record is gone. KEYS: the connection's hash; ARGV: the group.
const JOIN_RECORD: &str = r"
if redis.call('HEXISTS', KEYS[1], 'node') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'g:' .. ARGV[1], '1')
return 1
";

/// A leave's first step, in the group's slot: the member leaves the set. KEYS: the
/// member set; ARGV: the connection id. Returns `{removed, members left}`.
const LEAVE_SET: &str = r"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
return {removed, redis.call('SCARD', KEYS[1])}
";

/// A registration's second step, in the connection's slot: its hash, unless another
/// node holds that id. KEYS: the hash; ARGV: node, hub, user.
const REGISTER: &str = r"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'hub', ARGV[2], 'user', ARGV[3])
return 1
";

/// Moves a connection's hash to node `ARGV[1]` from node `ARGV[4]` (stateful reconnect
/// on another node), or writes it when it is gone. KEYS: the hash; ARGV: node, hub,
/// user, previous node.
const TAKE_OVER: &str = r"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] and owner ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'hub', ARGV[2], 'user', ARGV[3])
return 1
";

/// Deletes a connection's hash if `ARGV[1]` still owns it. KEYS: the hash.
const DROP_RECORD: &str = r"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// A reap's first step, in the dead node's slot: unless its heartbeat is back, delete
/// its generation (so the node, should it return, writes its state again) and list its
/// connections. KEYS: heartbeat, generation, connection set. Returns `{-1}` when alive,
/// else `{0, ids…}`.
const REAP_CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
redis.call('DEL', KEYS[2])
local out = {0}
for _, c in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = c end
return out
";

/// A reap's last step, in the node's slot, after every listed connection was dropped:
/// when the node came back meanwhile, delete its generation again (what it wrote may
/// have been dropped too, so it writes it once more) and return -1; else delete its
/// connection set, generation and reported counts. KEYS: heartbeat, generation,
/// connection set, counts.
const REAP_FINISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return -1
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return 0
";

/// A message for a positioned channel, in one call: the idempotency check, the guard, the
/// channel's next position (a new epoch when the counter is new), the history entry and
/// the PUBLISH; the envelope is put together here, its position between head and body
/// (the layout of [`crate::envelope`]).
///
/// KEYS: idempotency record, guard key (done marker or token bucket), position hash,
/// history stream (unused ones repeat the position hash).
/// ARGV: channel, head, body, new epoch, position ttl ms, history length (0: none),
/// history ttl ms, idempotency record ('' when none: `{fingerprint}|{correlation}`),
/// idempotency ttl ms, guard (`none`, `done` or `rate`), rate per second, burst, history
/// bytes (the stream keeps as many entries of this message's size as fit), the publish
/// command (`PUBLISH`, or `SPUBLISH` on a Redis Cluster), and `1` to start a new epoch
/// when the position was last written on another server.
///
/// That last check is for deployments where a channel can move while in use (a
/// failover promotes a replica that may lack the newest writes; a slot migrates): the
/// position's server (its replication id) is compared with this one's, and a new
/// epoch keeps a replica's older sequence numbers from being reused for new messages,
/// which subscribers would drop as repeats.
/// Returns `{1, nodes, epoch, seq}` when published, `{0}` when the guard held it back,
/// `{2, record}` for a repeat.
pub(super) const PUBLISH: &str = r"
local idem = ARGV[8] ~= ''
if idem then
  local prior = redis.call('GET', KEYS[1])
  if prior then return {2, prior} end
end
local allowed = true
if ARGV[10] == 'done' then
  allowed = redis.call('EXISTS', KEYS[2]) == 0
elseif ARGV[10] == 'rate' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local rate = tonumber(ARGV[11])
  local burst = tonumber(ARGV[12])
  local tokens = tonumber(redis.call('HGET', KEYS[2], 't') or ARGV[12])
  local last = tonumber(redis.call('HGET', KEYS[2], 'l') or now)
  tokens = math.min(burst, tokens + math.max(0, now - last) / 1000 * rate)
  allowed = tokens >= 1
  if allowed then tokens = tokens - 1 end
  redis.call('HSET', KEYS[2], 't', tokens, 'l', now)
  redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate * 1000) + 1000)
end
if not allowed then
  if idem then redis.call('SET', KEYS[1], ARGV[8] .. '|-1', 'PX', ARGV[9]) end
  return {0}
end
local seq = redis.call('HINCRBY', KEYS[3], 's', 1)
local epoch = redis.call('HGET', KEYS[3], 'e')
local fresh = seq == 1 or not epoch
if ARGV[15] == '1' then
  local here = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
  if redis.call('HGET', KEYS[3], 'r') ~= here then
    if epoch and seq > 1 then
      redis.call('HSET', KEYS[3], 'pe', epoch, 'ps', seq - 1)
    end
    redis.call('HSET', KEYS[3], 'r', here, 's', 1)
    seq = 1
    fresh = true
  end
end
if fresh then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[3], 'e', epoch)
  redis.call('DEL', KEYS[4])
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local pos = epoch .. ':' .. seq
local msg = ARGV[2] .. string.char(#pos) .. pos .. ARGV[3]
local keep = math.min(tonumber(ARGV[6]), math.floor(tonumber(ARGV[13]) / #msg))
if keep >= 1 then
  redis.call('XADD', KEYS[4], 'MAXLEN', keep, seq .. '-0', 'm', msg)
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
local nodes = redis.call(ARGV[14], ARGV[1], msg)
if idem then redis.call('SET', KEYS[1], ARGV[8] .. '|' .. nodes, 'PX', ARGV[9]) end
return {1, nodes, epoch, seq}
";

/// What a publisher knows of where a channel's previous stream ended, kept beside the
/// new one (`pe`, `ps` in its position hash) so a node that catches up later can count
/// what it never got. KEYS: the position hash; ARGV: the old epoch, its last sequence.
/// Only raises what is recorded, and only for an epoch that is not the current one.
pub(super) const EPOCH_END: &str = r"
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then return 0 end
local pe = redis.call('HGET', KEYS[1], 'pe')
if pe and pe ~= ARGV[1] then return 0 end
if pe and tonumber(redis.call('HGET', KEYS[1], 'ps')) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'pe', ARGV[1], 'ps', ARGV[2])
return 1
";

/// A node's heartbeat, and whether the cluster still holds its state: KEYS = heartbeat,
/// generation; ARGV = ttl ms, generation. Returns 1 when the stored
/// generation is this node's, 0 when it is missing or another (reaped while away, or
/// Redis lost its data): the node must write its state again. The generation is written
/// only after that state is written again, so a lost answer here cannot hide the loss.
pub(super) const HEARTBEAT: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
return 0
";

/// Confirms a resync: KEYS = generation; ARGV = the pending mark the resync set when it
/// started, the generation. Returns 0, changing nothing, when the mark is gone (a reaper
/// removed this node's state while the resync was writing it): the next heartbeat asks
/// for another.
pub(super) const CONFIRM_REGISTERED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Records a group for a user, in the user's slot. KEYS: lasting set, timed set; ARGV:
/// group, now (ms), end (ms; 0: lasting), the lasting bound, the timed bound, a year
/// (ms). Ended records are removed first; the group leaves the other set; each set
/// keeps its bound (lasting: the latest updated; timed: the last to end) and expires
/// with its last record. Returns how many records the bound pushed out.
const USER_GROUP_ADD: &str = r"
local now = tonumber(ARGV[2])
local year = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - year)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local into, other, score, bound = KEYS[1], KEYS[2], now, tonumber(ARGV[4])
if ARGV[3] ~= '0' then
  into, other, score, bound = KEYS[2], KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[5])
end
redis.call('ZREM', other, ARGV[1])
redis.call('ZADD', into, score, ARGV[1])
local excess = redis.call('ZCARD', into) - bound
if excess > 0 then redis.call('ZPOPMIN', into, excess) else excess = 0 end
if into == KEYS[1] then
  redis.call('PEXPIRE', KEYS[1], year)
else
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return excess
";

/// A user's records that have not ended, in the user's slot. KEYS: lasting set, timed
/// set; ARGV: now (ms), a year (ms). Returns `{lasting: group, updated…}, {timed:
/// group, end…}`.
const USER_GROUPS_READ: &str = r"
local now = tonumber(ARGV[1])
local lasting = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf', 'WITHSCORES')
local timed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
return {lasting, timed}
";

/// Forgets a user's record of group `ARGV[1]`, or every record when it is empty. KEYS:
/// lasting set, timed set.
const USER_GROUP_REMOVE: &str = r"
if ARGV[1] == '' then return redis.call('DEL', KEYS[1], KEYS[2]) end
return redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
";

pub(super) struct Scripts {
    pub(super) budget: Script,
    pub(super) health: Script,
    pub(super) breaker: Script,
    pub(super) publish: Script,
    pub(super) heartbeat: Script,
    pub(super) confirm: Script,
    pub(super) join_record: Script,
    pub(super) leave_set: Script,
    pub(super) register: Script,
    pub(super) drop_record: Script,
    pub(super) epoch_end: Script,
    pub(super) take_over: Script,
    pub(super) reap_claim: Script,
    pub(super) reap_finish: Script,
    pub(super) user_group_add: Script,
    pub(super) user_groups_read: Script,
    pub(super) user_group_remove: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            budget: Script::new(throttle::BUDGET_LUA),
            health: Script::new(throttle::HEALTH_LUA),
            breaker: Script::new(throttle::BREAKER_LUA),
            publish: Script::new(PUBLISH),
            heartbeat: Script::new(HEARTBEAT),
            confirm: Script::new(CONFIRM_REGISTERED),
            join_record: Script::new(JOIN_RECORD),
            leave_set: Script::new(LEAVE_SET),
            register: Script::new(REGISTER),
            drop_record: Script::new(DROP_RECORD),
            epoch_end: Script::new(EPOCH_END),
            take_over: Script::new(TAKE_OVER),
            reap_claim: Script::new(REAP_CLAIM),
            reap_finish: Script::new(REAP_FINISH),
            user_group_add: Script::new(USER_GROUP_ADD),
            user_groups_read: Script::new(USER_GROUPS_READ),
            user_group_remove: Script::new(USER_GROUP_REMOVE),
        }
    }
}
