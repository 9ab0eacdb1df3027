//! Every Lua script the Redis backplane runs, loaded once per backplane. The throttle
//! scripts stay in [`crate::backplane::throttle`], beside the in-process rules they mirror.

use redis::Script;

use crate::backplane::throttle;

/// Adds a connection to a group: its set, the hub's group set, the connection's hash.
const JOIN: &str = r"
if redis.call('HEXISTS', KEYS[3], 'node') == 0 then return 0 end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[4]) end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'g:' .. ARGV[2], '1')
return 1
";

/// Removes a connection from a group; the group leaves the hub's set when it empties.
const LEAVE: &str = r"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 then redis.call('DECR', KEYS[4]) end
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
redis.call('HDEL', KEYS[3], 'g:' .. ARGV[2])
return removed
";

/// Records a connection: its hash and its node's set.
const REGISTER: &str = r"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'hub', ARGV[2], 'user', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
";

/// Removes everything about connections: ARGV[1] is the prefix, the rest connection ids;
/// KEYS[1] is the owning node's connection set.
const DROP_FN: &str = r"
local function drop(prefix, conn_id)
  local conn_key = prefix .. ':conn:' .. conn_id
  local fields = redis.call('HGETALL', conn_key)
  local hub = nil
  for i = 1, #fields, 2 do
    if fields[i] == 'hub' then hub = fields[i + 1] end
  end
  if hub then
    for i = 1, #fields, 2 do
      local f = fields[i]
      if string.sub(f, 1, 2) == 'g:' then
        local g = string.sub(f, 3)
        local members = prefix .. ':' .. hub .. ':members:' .. g
        if redis.call('SREM', members, conn_id) == 1 then
          redis.call('DECR', prefix .. ':' .. hub .. ':memberships')
        end
        if redis.call('SCARD', members) == 0 then
          redis.call('SREM', prefix .. ':' .. hub .. ':groups', g)
        end
      end
    end
  end
  redis.call('DEL', conn_key)
end
";

fn unregister_script() -> String {
    format!(
        "{DROP_FN}
for i = 2, #ARGV do
  drop(ARGV[1], ARGV[i])
  redis.call('SREM', KEYS[1], ARGV[i])
end
return #ARGV - 1
"
    )
}

/// Reaps a dead node: KEYS = its connection set, the node set, its heartbeat key, its
/// generation; ARGV = prefix, node id. Does nothing (returns -1) if the node is alive
/// again. Deleting the generation is what tells the node, should it come back, that its
/// state is gone.
fn reap_script() -> String {
    format!(
        "{DROP_FN}
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local conns = redis.call('SMEMBERS', KEYS[1])
for _, c in ipairs(conns) do drop(ARGV[1], c) end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[2])
return #conns
"
    )
}

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
/// bytes (the stream keeps as many entries of this message's size as fit).
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
if seq == 1 or not epoch then
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
local nodes = redis.call('PUBLISH', ARGV[1], msg)
if idem then redis.call('SET', KEYS[1], ARGV[8] .. '|' .. nodes, 'PX', ARGV[9]) end
return {1, nodes, epoch, seq}
";

/// A node's heartbeat, and whether the cluster still holds its state: KEYS = heartbeat,
/// node set, generation; ARGV = ttl ms, node id, generation. Returns 1 when the stored
/// generation is this node's, 0 when it is missing or another (reaped while away, or
/// Redis lost its data): the node must write its state again. The generation is written
/// only after that state is written again, so a lost answer here cannot hide the loss.
pub(super) const HEARTBEAT: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[3] then return 1 end
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

pub(super) struct Scripts {
    pub(super) budget: Script,
    pub(super) health: Script,
    pub(super) breaker: Script,
    pub(super) publish: Script,
    pub(super) heartbeat: Script,
    pub(super) confirm: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) register: Script,
    pub(super) unregister: Script,
    pub(super) reap: Script,
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
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            register: Script::new(REGISTER),
            unregister: Script::new(&unregister_script()),
            reap: Script::new(&reap_script()),
        }
    }
}
