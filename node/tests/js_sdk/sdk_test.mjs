// The official WuKongIM JS SDK (wukongimjssdk 1.0.4, unchanged) against a real 3-node cluster.
// Run by node/tests/js_sdk.rs, which starts the cluster, bundles the SDK and passes:
//   WK_JS_BUNDLE  path of the esbuild bundle of entry.mjs
//   WK_JS_CONFIG  {"nodes":[{"id":1,"http":"127.0.0.1:port","pid":123}, ...]}
//
// Scenarios, each user in its own SDK instance (the bundle imported once per user):
// 1. alice, bob and carol connect through `/route` of their home nodes 1, 2, 3 and exchange
//    messages in a group and in person channels; each sees what the others sent.
// 2. While they all keep talking, the node leading the group channel is SIGKILLed. Every message
//    that got a successful SENDACK must reach every other member exactly once, live or (for
//    what was committed but not pushed before the kill) through /channel/messagesync, with the
//    seq its SENDACK gave; live messages arrive in seq order per channel. The user whose node
//    died reconnects through `/route` on a live node (the SDK's connectAddrCallback).
// 3. Every user reconnects and syncs its conversations through the SDK's conversation sync
//    provider pointed at `/conversation/sync` (as WuKongIM's demo app does): each
//    conversation's unread count is what the acked messages say (the messages after the
//    user's own last one there), also after a `/conversations/clearUnread`.
// Exits 0 when every check holds, 1 with the reason otherwise.

import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';

globalThis.WebSocket = WebSocket;
const say = (...a) => process.stdout.write(a.join(' ') + '\n');
// The SDK logs every packet with console.log; keep the output to what this test says.
console.log = () => {};

const cfg = JSON.parse(process.env.WK_JS_CONFIG);
const bundle = pathToFileURL(process.env.WK_JS_BUNDLE).href;
const killed = new Set();
const GROUP = 'js-team';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(why) {
  say('FAIL', why);
  process.exit(1);
}

/// Wait until `cond()` holds, checking every 50 ms; fail after `ms`.
async function until(what, ms, cond) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/// One HTTP call to the first live node that answers, starting with `first`.
async function http(path, body, first) {
  const order = [...cfg.nodes].sort((a, b) => (b.id === first) - (a.id === first));
  let last;
  for (const n of order.filter((n) => !killed.has(n.id))) {
    try {
      const res = await fetch(`http://${n.http}${path}`, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
      if (res.ok) return { node: n.id, json: await res.json() };
      last = `${n.id}: HTTP ${res.status} ${await res.text()}`;
    } catch (e) {
      last = `${n.id}: ${e}`;
    }
  }
  throw new Error(`${path}: no node answered (${last})`);
}

/// A user: its own SDK instance, connecting through `/route` of its home node first.
async function user(uid, home) {
  const mod = await import(`${bundle}?u=${uid}`);
  const sdk = mod.WKSDK.shared();
  const u = { uid, mod, sdk, status: 0, routes: [], live: [], sent: new Map(), acked: new Map() };
  sdk.config.uid = uid;
  sdk.config.token = `tok-${uid}`;
  sdk.config.provider.connectAddrCallback = (cb) => {
    (async () => {
      for (;;) {
        try {
          const r = await http(`/route?uid=${uid}`, undefined, home);
          u.routes.push(r.node);
          return cb(r.json.ws_addr);
        } catch {
          await sleep(200);
        }
      }
    })();
  };
  // The conversation sync provider, as WuKongIM's demo app writes it.
  sdk.config.provider.syncConversationsCallback = async () => {
    const r = await http('/conversation/sync', { uid, msg_count: 1 }, home);
    return r.json.map((c) => {
      const conv = new mod.Conversation();
      conv.channel = new mod.Channel(c.channel_id, c.channel_type);
      conv.unread = c.unread;
      conv.timestamp = c.timestamp;
      const last = new mod.Message();
      last.channel = conv.channel;
      last.messageSeq = c.last_msg_seq;
      last.clientMsgNo = c.last_client_msg_no;
      conv.lastMessage = last;
      return conv;
    });
  };
  sdk.connectManager.addConnectStatusListener((s) => {
    u.status = s;
  });
  sdk.chatManager.addMessageListener((m) => {
    if (m.fromUID === uid) return; // its own send, echoed locally by the SDK
    u.live.push({
      ch: `${m.channel.channelType}/${m.channel.channelID}`,
      seq: m.messageSeq,
      from: m.fromUID,
      text: m.content.text,
    });
  });
  sdk.chatManager.addMessageStatusListener((ack) => {
    const m = u.sent.get(ack.clientSeq);
    if (m && ack.reasonCode === 1) u.acked.set(ack.clientSeq, { ...m, seq: ack.messageSeq });
  });
  sdk.connectManager.connect();
  return u;
}

/// Send `text` from `u` to a group or person channel; what the receiver will see as channel.
async function send(u, text, to, type) {
  const m = await u.sdk.chatManager.send(new u.mod.MessageText(text), new u.mod.Channel(to, type));
  const key = type === 2 ? `2/${to}` : `1/${u.uid}`; // as the receiver sees it
  u.sent.set(m.clientSeq, { ch: key, to, type, text, from: u.uid });
}

const connected = (us) => us.every((u) => u.status === 1);

// --- setup over HTTP: tokens, the group and its members
for (const uid of ['alice', 'bob', 'carol']) {
  await http('/user/token', { uid, token: `tok-${uid}`, device_flag: 1, device_level: 1 });
}
await http('/channel', { channel_id: GROUP, channel_type: 2, subscribers: ['alice', 'bob', 'carol'] });

const alice = await user('alice', 1);
const bob = await user('bob', 2);
const carol = await user('carol', 3);
const users = [alice, bob, carol];
await until('all three connected', 15000, () => connected(users));
say('connected through nodes', users.map((u) => `${u.uid}@${u.routes.at(-1)}`).join(' '));

// --- phase 1: a group message and person messages across nodes
await send(alice, 'hello team', GROUP, 2);
await send(bob, 'hi alice', 'alice', 1);
await send(carol, 'hi bob', 'bob', 1);
const got = (u, ch, text) => u.live.some((m) => m.ch === ch && m.text === text);
await until('phase 1 deliveries', 10000, () =>
  got(bob, `2/${GROUP}`, 'hello team') &&
  got(carol, `2/${GROUP}`, 'hello team') &&
  got(alice, '1/bob', 'hi alice') &&
  got(bob, '1/carol', 'hi bob'));
say('phase 1: group and person messages delivered across nodes');

// --- phase 2: kill the group's leader with SIGKILL while everyone talks
const leader = (await http(`/cluster/channels/${GROUP}/2/config`)).json.leader;
const victim = cfg.nodes.find((n) => n.id === leader);
if (!victim) fail(`no leader for ${GROUP}`);
const homeless = users.find((u) => u.routes.at(-1) === victim.id);
say(`phase 2: node ${victim.id} leads ${GROUP}; ${homeless.uid} is connected there`);
const ROUNDS = 40;
for (let r = 0; r < ROUNDS; r++) {
  if (r === 12) {
    process.kill(victim.pid, 'SIGKILL');
    killed.add(victim.id);
    say(`killed node ${victim.id} at round ${r}`);
  }
  for (const u of users) {
    // 1.0.4 writes straight into the socket: send only while connected (the SDK re-sends
    // what is un-acked after its reconnect).
    if (u.status !== 1) continue;
    await send(u, `g-${u.uid}-${r}`, GROUP, 2);
    const peer = u === alice ? 'bob' : 'alice';
    await send(u, `p-${u.uid}-${r}`, peer, 1);
  }
  await sleep(40);
}
await until('every SEND acked', 40000, () => users.every((u) => u.acked.size === u.sent.size));
if (homeless.routes.length < 2 || homeless.routes.at(-1) === victim.id) {
  fail(`${homeless.uid} did not reconnect through another node: routes ${homeless.routes}`);
}
say(`${homeless.uid} reconnected through node ${homeless.routes.at(-1)}`);

// What each user must see: every acked message of the others addressed to it.
const expected = (r) =>
  users
    .filter((s) => s !== r)
    .flatMap((s) => [...s.acked.values()])
    .filter((m) => m.type === 2 || m.to === r.uid);
const covered = (r) => {
  const have = new Set(r.live.map((m) => `${m.ch}#${m.seq}`));
  return expected(r).every((m) => have.has(`${m.ch}#${m.seq}`));
};
// Live delivery gets a few seconds; what the killed leader committed but did not push comes
// from messagesync, as an app does after a reconnect.
const deadline = Date.now() + 5000;
while (!users.every(covered) && Date.now() < deadline) await sleep(50);

let synced = 0;
for (const r of users) {
  const seen = new Map();
  for (const m of r.live) {
    const k = `${m.ch}#${m.seq}`;
    if (seen.has(k)) fail(`${r.uid} got ${k} twice live`);
    seen.set(k, m);
  }
  const byCh = new Map();
  for (const m of r.live) {
    const last = byCh.get(m.ch) ?? 0;
    if (m.seq <= last) fail(`${r.uid}: ${m.ch} seq ${m.seq} after ${last} (out of order)`);
    byCh.set(m.ch, m.seq);
  }
  for (const want of expected(r)) {
    const k = `${want.ch}#${want.seq}`;
    if (seen.has(k)) continue;
    const [type, id] = want.ch.split('/');
    const res = await http('/channel/messagesync', {
      login_uid: r.uid, channel_id: id, channel_type: Number(type),
      start_message_seq: want.seq, end_message_seq: want.seq + 1, limit: 1, pull_mode: 1,
    });
    const m = res.json.messages.find((m) => m.message_seq === want.seq);
    if (!m) fail(`${r.uid} never got ${k} (${want.text}), not even through messagesync`);
    const text = JSON.parse(Buffer.from(m.payload, 'base64').toString()).content;
    seen.set(k, { ch: want.ch, seq: want.seq, from: m.from_uid, text });
    synced++;
  }
  for (const want of expected(r)) {
    const m = seen.get(`${want.ch}#${want.seq}`);
    if (m.text !== want.text || m.from !== want.from) {
      fail(`${r.uid}: ${want.ch}#${want.seq} is ${JSON.stringify(m)}, want ${JSON.stringify(want)}`);
    }
  }
}
const total = users.reduce((n, r) => n + expected(r).length, 0);
say(`phase 2: ${total} deliveries checked, ${total - synced} live, ${synced} through messagesync`);

// --- phase 3: reconnect, then the SDK's conversation sync shows the right unread counts
// Every acked message, by channel (`g` or the sorted uid pair): its seqs must be 1..n.
const chans = new Map();
for (const m of users.flatMap((u) => [...u.acked.values()])) {
  const key = m.type === 2 ? 'g' : [m.from, m.to].sort().join('@');
  if (!chans.has(key)) chans.set(key, []);
  chans.get(key).push(m);
}
const cleared = new Map(); // `${uid}/${key}` -> read seq set by clearUnread
function wantConversations(r) {
  const want = new Map();
  for (const [key, msgs] of chans) {
    const members = key === 'g' ? users.map((u) => u.uid) : key.split('@');
    if (!members.includes(r.uid)) continue;
    const seqs = msgs.map((m) => m.seq).sort((a, b) => a - b);
    if (seqs.some((s, i) => s !== i + 1)) fail(`${key}: acked seqs are not 1..n: ${seqs}`);
    const last = seqs.length;
    const own = Math.max(0, ...msgs.filter((m) => m.from === r.uid).map((m) => m.seq));
    const read = Math.max(own, cleared.get(`${r.uid}/${key}`) ?? 0);
    const id = key === 'g' ? GROUP : members.find((u) => u !== r.uid);
    want.set(`${key === 'g' ? 2 : 1}/${id}`, { unread: last - read, last });
  }
  return want;
}
async function checkConversations(what) {
  for (const r of users) {
    const want = wantConversations(r);
    const deadline = Date.now() + 10000;
    for (;;) {
      await r.sdk.conversationManager.sync({});
      // What the SDK now holds as the user's conversation list.
      const got = new Map(
        r.sdk.conversationManager.conversations.map((c) => [
          `${c.channel.channelType}/${c.channel.channelID}`,
          { unread: c.unread, last: c.lastMessage.messageSeq },
        ]),
      );
      const same =
        got.size === want.size &&
        [...want].every(([k, w]) => got.get(k)?.unread === w.unread && got.get(k)?.last === w.last);
      if (same) break;
      if (Date.now() > deadline) {
        fail(`${r.uid} (${what}): conversations ${JSON.stringify([...got])}, want ${JSON.stringify([...want])}`);
      }
      await sleep(100);
    }
  }
}
// disconnect() tells no status listener: read the manager's own status.
for (const u of users) {
  u.sdk.connectManager.disconnect();
  u.status = u.sdk.connectManager.status;
}
await until('all three disconnected', 5000, () => users.every((u) => u.status !== 1));
for (const u of users) u.sdk.connectManager.connect();
await until('all three reconnected', 15000, () => connected(users));
await checkConversations('after a reconnect');
await http('/conversations/clearUnread', { uid: 'bob', channel_id: GROUP, channel_type: 2 });
cleared.set('bob/g', chans.get('g').length);
await checkConversations('after bob cleared the group');
const unread = users.map((u) => `${u.uid}:${[...wantConversations(u).values()].map((w) => w.unread).join(',')}`);
say(`phase 3: conversation unread counts after a reconnect match the acked messages (${unread.join(' ')})`);
say('OK');
process.exit(0);
