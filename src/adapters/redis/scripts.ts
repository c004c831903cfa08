/**
 * @module adapters/redis/scripts
 * The Redis broker's Lua scripts: each step that must be atomic (a crash or another consumer
 * cannot see half of it) is one script. Keys and fields are described in `redis-broker.ts`.
 */

import type { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { Redis } from './connect.ts';
import { isReply } from './errors.ts';

/** A Lua script run by EVALSHA, loaded again with EVAL when Redis does not know it (a restart). */
export class Script {
  private readonly sha: string;
  constructor(private readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }
  async run(redis: Redis, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await redis.call('EVALSHA', this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!isReply(error, 'NOSCRIPT')) throw error;
      return redis.call('EVAL', this.lua, keys.length, ...keys, ...args);
    }
  }
}

const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * Appends a batch of entries (one turn's publishes: `publisher.ts`), each deduped atomically with
 * its XADD. KEYS: dead-letter hash, then per entry its stream and dedupe key. ARGV: max length
 * (0: none), retention ms (0: none), then per entry: envelope id, dedupe window (0: none), trim by
 * age ('1': yes), dead letter to delete ('' none), field count n, the n fields.
 * Returns per entry [stored or first envelope id, 0], [first envelope id, 1] for a duplicate, or
 * [error reply, 2] when nothing of that entry was stored (its other entries are unaffected).
 *
 * `SET NX PX` claims the dedupe key before the XADD (one command where GET then SET took two); an
 * XADD that fails releases it again, so a failed entry leaves nothing behind and its publisher can
 * retry. Commands that can fail for one entry run by `pcall`, so one bad entry never aborts the
 * script halfway through the others.
 */
export const PUBLISH = new Script(`
local maxlen = ARGV[1]
local retention = tonumber(ARGV[2])
local out = {}
local a = 3
for e = 1, (#KEYS - 1) / 2 do
  local stream, dedupe = KEYS[2 * e], KEYS[2 * e + 1]
  local id, window, trim, letter = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local first, last = a + 5, a + 4 + tonumber(ARGV[a + 4])
  a = last + 1
  local claimed = true
  if window ~= '0' then claimed = redis.pcall('SET', dedupe, id, 'NX', 'PX', window) end
  if type(claimed) == 'table' and claimed.err then
    out[e] = {claimed.err, 2}
  elseif not claimed then
    out[e] = {redis.call('GET', dedupe), 1}
  else
    local r
    if maxlen == '0' and last == first + 1 then
      r = redis.pcall('XADD', stream, '*', ARGV[first], ARGV[last]) -- the usual entry: no table to build
    else
      local add = {stream}
      if maxlen ~= '0' then
        add[#add + 1] = 'MAXLEN'; add[#add + 1] = '~'; add[#add + 1] = maxlen
      end
      add[#add + 1] = '*'
      for i = first, last do add[#add + 1] = ARGV[i] end
      r = redis.pcall('XADD', unpack(add))
    end
    if type(r) == 'table' and r.err then
      if window ~= '0' then redis.call('DEL', dedupe) end
      out[e] = {r.err, 2}
    else
      if trim == '1' and retention > 0 then
        ${NOW_MS}
        local minid = now - retention
        if minid > 0 then redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', minid)) end
      end
      if letter ~= '' then redis.call('HDEL', KEYS[1], letter) end
      out[e] = {id, 0}
    end
  end
end
return out
`);

/**
 * Appends a batch of plain entries (no dedupe key, no dead letter to delete): one call where a
 * pipeline took one command per entry, which costs the client several times what the entries do.
 * KEYS: the batch's streams. ARGV: max length ('0': none), min id to trim to by age ('0': none),
 * a '1' or '0' per key (trim that stream after its entries), then per entry: its stream's index
 * in KEYS, the count n of its fields besides the body, the body, the n fields.
 * Returns [entry number, error reply, …] for the entries Redis refused (nothing of them was
 * stored; the others are): empty when all were stored. Trimming failures are not reported (a
 * later batch trims again).
 */
export const APPEND = new Script(`
local maxlen, minid, trims = ARGV[1], ARGV[2], ARGV[3]
local failed = {}
local a, e = 4, 0
while a <= #ARGV do
  e = e + 1
  local stream, n = KEYS[tonumber(ARGV[a])], tonumber(ARGV[a + 1])
  local r
  if maxlen == '0' and n == 0 then
    r = redis.pcall('XADD', stream, '*', 'body', ARGV[a + 2]) -- the usual entry: no table to build
  else
    local add = {stream}
    if maxlen ~= '0' then
      add[#add + 1] = 'MAXLEN'; add[#add + 1] = '~'; add[#add + 1] = maxlen
    end
    add[#add + 1] = '*'; add[#add + 1] = 'body'; add[#add + 1] = ARGV[a + 2]
    for i = a + 3, a + 2 + n do add[#add + 1] = ARGV[i] end
    r = redis.pcall('XADD', unpack(add))
  end
  if type(r) == 'table' and r.err then
    failed[#failed + 1] = e; failed[#failed + 1] = r.err
  end
  a = a + 3 + n
end
if minid ~= '0' then
  for k = 1, #KEYS do
    if string.sub(trims, k, k) == '1' then redis.pcall('XTRIM', KEYS[k], 'MINID', '~', minid) end
  end
end
return failed
`);

/**
 * KEYS: stream, retry set. ARGV: group, consumer, room, lease ('' : no take-over this time),
 * XAUTOCLAIM cursor. Takes due retries, then (if asked) entries idle for a lease that are not
 * waiting for a retry. Returns [next cursor, [[id, fields, delivery count], …]].
 */
export const CLAIM = new Script(`
${NOW_MS}
local room = tonumber(ARGV[3])
local out = {}
local function take(id)
  local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if #c == 0 then return end
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local n = 1
  if #p > 0 then n = p[1][4] end
  out[#out + 1] = {c[1][1], c[1][2], n}
  room = room - 1
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, room)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  take(id)
end
local cursor = ARGV[5]
if ARGV[4] ~= '' and room > 0 then
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], cursor, 'COUNT', room, 'JUSTID')
  cursor = r[1]
  for _, id in ipairs(r[2]) do
    if room > 0 and not redis.call('ZSCORE', KEYS[2], id) then take(id) end
  end
end
return {cursor, out}
`);

/** KEYS: stream, retry set. ARGV: group, consumer, id, delay. Parks a held entry; returns 1, or 0 if no longer held. */
export const PARK = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
${NOW_MS}
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[4])), ARGV[3])
return 1
`);

/** KEYS: stream. ARGV: group, consumer, id. Resets a held entry's idle time; 0 if no longer held. */
export const EXTEND = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
`);

/** KEYS: stream. ARGV: group, consumer. Deletes a consumer that holds nothing (never one with pending entries). */
export const FORGET = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
`);

/**
 * KEYS: stream. ARGV: group, idle ms. Deletes consumers that hold nothing and were not seen for
 * that long (crashed or closed while others still had their retries): never one with pending
 * entries, and a live one that is deleted is made again by its next read.
 */
export const JANITOR = new Script(`
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
`);

/** KEYS: dead-letter hash, counter. ARGV: JSON letter without id. Returns the id. */
export const DEAD_LETTER = new Script(`
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], id, ARGV[1])
return id
`);
