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

/// Reaps a dead node: KEYS = its connection set, the node set, its heartbeat key;
/// ARGV = prefix, node id. Does nothing (returns -1) if the node is alive again.
fn reap_script() -> String {
    format!(
        "{DROP_FN}
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local conns = redis.call('SMEMBERS', KEYS[1])
for _, c in ipairs(conns) do drop(ARGV[1], c) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return #conns
"
    )
}

pub(super) struct Scripts {
    pub(super) budget: Script,
    pub(super) health: Script,
    pub(super) breaker: Script,
    pub(super) unless_done: Script,
    pub(super) rate_publish: Script,
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
            unless_done: Script::new(throttle::PUBLISH_UNLESS_DONE_LUA),
            rate_publish: Script::new(throttle::RATE_PUBLISH_LUA),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            register: Script::new(REGISTER),
            unregister: Script::new(&unregister_script()),
            reap: Script::new(&reap_script()),
        }
    }
}
