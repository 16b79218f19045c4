#!lua
-- Records a batch of finished tasks in one step: acknowledges them (out of the in-flight hash),
-- sends each where it goes next (dead list, schedule, back to its queue) and counts them.
-- KEYS: in-flight hash, stats hash, dead list, schedule, recorded marker, then the queues the
-- batch names. ARGV (built by src/record.c):
--   [1] the batch's tag ("<token>:<seq>"): a batch whose reply was lost is sent again with the
--       same tag, and then does nothing twice;
--   [2] "1" when tasks are acknowledged out of the in-flight hash (at-least-once), else "0";
--   [3] how many groups of tasks that only need acknowledging follow; each group is
--       (queue key index, count, then that many ids in at-least-once mode);
--   then, to the end, one 5-tuple per other task: id, queue key index, kind, score, entry;
--   kind: "d" dead letter, "r" retry (scored), "l" delayed (scored), "q" back to its queue,
--   "c" ended ok with a next step (entry) for the queue named in the score's place (a name
--   from a payload, not a key: it may not be ours to write), "n" not run to its end and not to
--   run again, counted under the name in the score's place ("duplicate", "cancelled").
--   For "d" and "q" the score's place holds the key of a unique task's claim (src/unique.c)
--   that the task gives back, never having run ("" when none): a copy pushed again may run.
-- In at-least-once mode a task that is no longer in the in-flight hash (another worker put it
-- back after this one missed its heartbeats, or someone deleted the hash) is not recorded: it
-- runs again from where it was put back. Returns {recorded, not recorded (no longer ours)}.
-- Every key's type is checked before anything is written (Lua does not roll back); declared
-- without flags, so under maxmemory Redis refuses the whole call: nothing half done.
-- include requeue_fn.lua
local want = {'hash', 'hash', 'list', 'zset', 'string'}
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i]).ok
  local w = want[i] or 'list'
  if t ~= w and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. w)
  end
end
if redis.call('GET', KEYS[5]) == ARGV[1] then return {0, 0, 1} end
local acks = ARGV[2] == '1'
local totals, perq = {}, {}
local function count(qi, what, n)
  if n == 0 then return end
  totals[what] = (totals[what] or 0) + n
  local q = perq[qi] or {}
  perq[qi] = q
  q[what] = (q[what] or 0) + n
end
-- Only if it still holds this task's id: a claim that expired may be another copy's by now.
-- Checked key by key (its name comes from a payload's id): a key of another type or one the
-- ACL keeps from us is left, not a reason to refuse the batch.
local function release_claim(key, id)
  if redis.acl_check_cmd('TYPE', key) and redis.acl_check_cmd('GET', key) and
      redis.acl_check_cmd('DEL', key) and usable(key, 'string') and
      redis.call('GET', key) == id then
    redis.call('DEL', key)
  end
end
local recorded, skipped = 0, 0
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local qi, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  i = i + 2
  local done = n
  if acks then
    done = 0
    for j = i, i + n - 1, 1000 do
      done = done + redis.call('HDEL', KEYS[1], unpack(ARGV, j, math.min(j + 999, i + n - 1)))
    end
    i = i + n
  end
  count(qi, 'processed', done)
  count(qi, 'succeeded', done)
  recorded, skipped = recorded + done, skipped + n - done
end
while i + 4 <= #ARGV do
  local id, qi, kind, score, entry = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3],
                                     ARGV[i + 4]
  i = i + 5
  if acks and redis.call('HDEL', KEYS[1], id) == 0 then
    skipped = skipped + 1
  else
    recorded = recorded + 1
    if (kind == 'd' or kind == 'q') and score ~= '' then release_claim(score, id) end
    if kind == 'd' then
      redis.call('LPUSH', KEYS[3], entry)
      count(qi, 'processed', 1)
      count(qi, 'failed', 1)
      count(qi, 'dead', 1)
    elseif kind == 'r' or kind == 'l' then
      redis.call('ZADD', KEYS[4], score, entry)
      if kind == 'r' then
        count(qi, 'processed', 1)
        count(qi, 'failed', 1)
        count(qi, 'retried', 1)
      end
    elseif kind == 'q' then
      redis.call('RPUSH', KEYS[qi], entry)
      count(qi, 'requeued', 1)
    elseif kind == 'n' and (score == 'duplicate' or score == 'cancelled') then
      count(qi, score, 1)
    elseif kind == 'c' then
      -- The next step's queue comes from a payload: checked here, one task at a time, so that a
      -- key of another type, or one the ACL keeps from us, costs that step (a dead letter), not
      -- the whole batch (a script that fails half-way does not roll back).
      count(qi, 'processed', 1)
      count(qi, 'succeeded', 1)
      if redis.acl_check_cmd('TYPE', score) and redis.acl_check_cmd('LPUSH', score, entry) and
          usable(score, 'list') then
        redis.call('LPUSH', score, entry)
      else
        -- Named by the next step's own id, the one its sender knows.
        local ok, e = pcall(cjson.decode, entry)
        local nid = ok and type(e) == 'table' and type(e.id) == 'string' and e.id or id
        redis.call('LPUSH', KEYS[3], dead_letter(entry, nid, score, 'chain_queue_refused'))
        count(qi, 'dead', 1)
      end
    end
  end
end
for what, n in pairs(totals) do redis.call('HINCRBY', KEYS[2], what, n) end
for qi, q in pairs(perq) do
  for what, n in pairs(q) do
    redis.call('HINCRBY', KEYS[2], 'queue:' .. KEYS[qi] .. ':' .. what, n)
  end
end
redis.call('SET', KEYS[5], ARGV[1])
return {recorded, skipped, 0}
