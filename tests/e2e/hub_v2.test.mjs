// The stateless 2026-07-28 revision through the hub, driven by the official v2 client
// (@modelcontextprotocol/client, pinned to 2026-07-28) with every POST sent to the next of two
// edges, beside a 1.x SDK client on the same endpoint. The upstreams speak the session era:
// the hub bridges their elicitation requests into input_required round trips. Stateless
// clients get per-session instances by scope, and list changes on subscriptions/listen.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { BIN_DIR, childrenOf, startHub } from './hub.mjs';

const FIXTURE = join(BIN_DIR, 'mcphub-fixture');
const MODERN = '2026-07-28';
const SETTINGS = {
  mcpServers: {
    fx: { command: FIXTURE, args: ['--name', 'fx'] },
    own: { command: FIXTURE, args: ['--name', 'own'], perSession: true },
  },
};

function textOf(result) {
  assert.equal(result.content[0].type, 'text');
  return result.content[0].text;
}

async function waitUntil(pred, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// A v2 client in the 2026 era whose POSTs go to the hub's edges in turn; posts records
// {edge, body} of each, so a test can tell where the retry of a round trip went.
async function modernClient(hub, { capabilities = {}, onElicit } = {}) {
  const posts = [];
  let next = 0;
  const fetchNext = (_url, init) => {
    const edge = next++ % hub.edges.length;
    posts.push({ edge, body: init?.body ? JSON.parse(init.body) : null });
    return fetch(hub.url('/mcp', edge), init);
  };
  const client = new V2Client({ name: 'e2e-v2', version: '1.0.0' },
    { capabilities, versionNegotiation: { mode: { pin: MODERN } } });
  if (onElicit) client.setRequestHandler('elicitation/create', onElicit);
  await client.connect(new V2Transport(hub.url('/mcp', 0), { fetch: fetchNext }));
  return { client, posts };
}

// The fetch options of a raw 2026 request: its headers and its body with the _meta envelope
// (plus the keys of meta).
function modernInit(id, method, params, { scope, caps = {}, meta = {} } = {}) {
  const headers = {
    'content-type': 'application/json', accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN, 'mcp-method': method,
  };
  if (params.name) headers['mcp-name'] = params.name;
  if (scope) headers['mcphub-scope'] = scope;
  const body = {
    jsonrpc: '2.0', id, method,
    params: { ...params, _meta: { ...meta, 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': caps } },
  };
  return { method: 'POST', headers, body: JSON.stringify(body) };
}

// One raw 2026 request (for what the client hides: status codes, scopes).
async function modernPost(hub, edge, method, params = {}, opts = {}) {
  const r = await fetch(hub.url('/mcp', edge), modernInit(1, method, params, opts));
  const text = await r.text();
  const json = r.headers.get('content-type')?.startsWith('text/event-stream')
    ? JSON.parse(text.split('\n').filter((l) => l.startsWith('data:')).pop().slice(5))
    : JSON.parse(text);
  return { status: r.status, json };
}

// A 2026 subscriptions/listen stream opened with a raw POST on edge: next() reads its next
// message, close() hangs up.
async function openListen(hub, edge, id, notifications) {
  const ac = new AbortController();
  const r = await fetch(hub.url('/mcp', edge),
    { ...modernInit(id, 'subscriptions/listen', { notifications }), signal: ac.signal });
  assert.equal(r.status, 200);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const next = async () => {
    for (;;) {
      const line = buf.split('\n').find((l) => l.startsWith('data:'));
      if (line) {
        buf = buf.slice(buf.indexOf(line) + line.length + 1);
        return JSON.parse(line.slice(5));
      }
      const { value, done } = await reader.read();
      if (done) throw new Error('listen stream ended');
      buf += decoder.decode(value, { stream: true });
    }
  };
  return { next, close: () => ac.abort() };
}

describe('stateless 2026-07-28 clients', () => {
  let hub;
  before(async () => { hub = await startHub(SETTINGS, { edges: 2 }); });
  after(async () => { await hub.stop(); });

  test('a v2 client lists and calls tools through both edges while a 1.x client works on the same endpoint', async () => {
    const { client, posts } = await modernClient(hub);
    assert.equal(client.getProtocolEra(), 'modern');
    assert.deepEqual(client.getDiscoverResult().supportedVersions, [MODERN]);
    assert.equal(client.getServerVersion().name, 'mcphub');

    const v1 = new Client({ name: 'e2e-v1', version: '1.0.0' });
    await v1.connect(new StreamableHTTPClientTransport(hub.url('/mcp', 0)));
    try {
      const [modernTools, legacyTools] = await Promise.all([client.listTools(), v1.listTools()]);
      assert.ok(modernTools.tools.some((t) => t.name === 'fx-echo'));
      assert.deepEqual(modernTools.tools.map((t) => t.name), legacyTools.tools.map((t) => t.name));
      // Interleaved calls of both eras.
      const calls = [];
      for (let i = 0; i < 10; i++) {
        calls.push(client.callTool({ name: 'fx-echo', arguments: { message: `m${i}` } })
          .then((r) => assert.equal(textOf(r), `m${i}`)));
        calls.push(v1.callTool({ name: 'fx-echo', arguments: { message: `l${i}` } })
          .then((r) => assert.equal(textOf(r), `l${i}`)));
      }
      await Promise.all(calls);
      assert.ok(posts.some((p) => p.edge === 0) && posts.some((p) => p.edge === 1));
      assert.ok(posts.every((p) => !p.body || p.body.method !== 'initialize'));
    } finally {
      await v1.close();
      await client.close();
    }
  });

  test('elicitation from a session-era upstream becomes input_required; the retry on the other edge gets the result', async () => {
    const asked = [];
    const { client, posts } = await modernClient(hub, {
      capabilities: { elicitation: {} },
      onElicit: async (req) => {
        asked.push(req.params.message);
        return { action: 'accept', content: { username: 'alice', email: 'alice@example.com' } };
      },
    });
    try {
      const r = await client.callTool({ name: 'fx-test_elicitation', arguments: { message: 'who are you?' } });
      assert.match(textOf(r), /action=accept/);
      assert.match(textOf(r), /alice@example\.com/);
      assert.deepEqual(asked, ['who are you?']);
      const rounds = posts.filter((p) => p.body?.method === 'tools/call');
      assert.equal(rounds.length, 2, 'the first call and its retry');
      assert.equal(rounds[0].body.params.requestState, undefined);
      assert.equal(typeof rounds[1].body.params.requestState, 'string');
      assert.equal(Object.keys(rounds[1].body.params.inputResponses).length, 1);
      assert.notEqual(rounds[0].edge, rounds[1].edge, 'the retry went through the other edge');
    } finally {
      await client.close();
    }
  });

  test('a client that did not declare elicitation gets 400 -32021; a forged requestState -32602', async () => {
    const r = await modernPost(hub, 0, 'tools/call', { name: 'fx-test_elicitation', arguments: { message: 'x' } });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, -32021);
    assert.deepEqual(r.json.error.data, { requiredCapabilities: { elicitation: {} } });

    const first = await modernPost(hub, 0, 'tools/call', { name: 'fx-test_elicitation', arguments: { message: 'x' } },
      { caps: { elicitation: {} } });
    assert.equal(first.json.result.resultType, 'input_required');
    const state = first.json.result.requestState;
    const forged = `${state.slice(0, -2)}${state.endsWith('AA') ? 'BB' : 'AA'}`;
    const bad = await modernPost(hub, 1, 'tools/call',
      { name: 'fx-test_elicitation', arguments: { message: 'x' }, requestState: forged, inputResponses: {} },
      { caps: { elicitation: {} } });
    assert.equal(bad.json.error.code, -32602);
    // Another scope cannot continue it either.
    const other = await modernPost(hub, 1, 'tools/call',
      { name: 'fx-test_elicitation', arguments: { message: 'x' }, requestState: state, inputResponses: {} },
      { caps: { elicitation: {} }, scope: 'someone-else' });
    assert.equal(other.json.error.code, -32602);
    // The rightful retry still works (declining this time).
    const key = Object.keys(first.json.result.inputRequests)[0];
    const done = await modernPost(hub, 1, 'tools/call',
      { name: 'fx-test_elicitation', arguments: { message: 'x' }, requestState: state, inputResponses: { [key]: { action: 'decline' } } },
      { caps: { elicitation: {} } });
    assert.equal(done.json.result.resultType, 'complete');
    assert.match(done.json.result.content[0].text, /action=decline/);
  });

  test('a question the upstream withdraws is not asked again', async () => {
    // fx-elicit_again asks, withdraws that question after 200 ms and asks another.
    const call = { name: 'fx-elicit_again', arguments: { message: 'Who?', delay_ms: 200 } };
    const opts = { caps: { elicitation: {} } };
    let r = await modernPost(hub, 0, 'tools/call', call, opts);
    const asked = (res) => Object.values(res.json.result.inputRequests).map((q) => q.params.message);
    assert.equal(r.json.result.resultType, 'input_required');
    assert.deepEqual(asked(r), ['Who?']);
    // Retries that answer nothing are told what is still asked: after the withdrawal, only
    // the second question, through either edge.
    let edge = 0;
    await waitUntil(async () => {
      r = await modernPost(hub, ++edge % 2, 'tools/call',
        { ...call, requestState: r.json.result.requestState, inputResponses: {} }, opts);
      assert.equal(r.json.result.resultType, 'input_required');
      return asked(r)[0] !== 'Who?';
    }, 'the withdrawal');
    assert.deepEqual(asked(r), ['Who? (again)']);
    const key = Object.keys(r.json.result.inputRequests)[0];
    const done = await modernPost(hub, ++edge % 2, 'tools/call',
      { ...call, requestState: r.json.result.requestState, inputResponses: { [key]: { action: 'accept', content: { name: 'Ada' } } } }, opts);
    assert.equal(done.json.result.resultType, 'complete');
    assert.equal(textOf(done.json.result), 'action=accept name=Ada');
  });

  test('closing the stream of a call cancels it upstream, answered or not yet', async () => {
    const running = async () => (await hub.admin().listSessions({})).sessions
      .find((x) => x.scope === 'cancel')?.running ?? -1;
    for (const progressToken of [undefined, 'p1']) {
      const ac = new AbortController();
      // With a progress token the answer is an event stream at once.
      const meta = progressToken ? { progressToken } : {};
      const pending = fetch(hub.url('/mcp/fx', 1), {
        ...modernInit(9, 'tools/call', { name: 'slow', arguments: { steps: 100, delayMs: 100 } }, { scope: 'cancel', meta }),
        signal: ac.signal,
      }).then((r) => r.body?.getReader().read()).catch(() => null);
      await waitUntil(async () => (await running()) === 1, 'the call running');
      const t0 = Date.now();
      ac.abort();
      await pending;
      await waitUntil(async () => (await running()) === 0, 'the call cancelled', 5_000);
      console.log(`${progressToken ? 'streaming' : 'undecided'} answer: call ended ${Date.now() - t0} ms after the client closed (it had 10 s to run)`);
    }
  });

  test('perSession servers get one instance per scope (header or _meta), ended by Admin like a session', async () => {
    const pidOf = async (scope) => {
      const r = await modernPost(hub, scope === 'b' ? 1 : 0, 'tools/call', { name: 'own-echo', arguments: { message: scope ?? 'key' } }, { scope });
      assert.equal(r.json.result.content[0].text, scope ?? 'key');
      const { sessions } = await hub.admin().listSessions({});
      const s = sessions.find((x) => x.scope === (scope ?? '') && x.protocolVersion === MODERN);
      assert.ok(s, `a scope session for ${scope}`);
      const { instances } = await hub.admin().listInstances({ sessionId: s.sessionId });
      assert.equal(instances.length, 1);
      return { session: s.sessionId, pid: instances[0].pid };
    };
    const a = await pidOf('a');
    const b = await pidOf('b');
    const k = await pidOf(undefined);
    assert.equal(new Set([a.pid, b.pid, k.pid]).size, 3, 'three scopes, three processes');
    assert.equal((await pidOf('a')).pid, a.pid, 'the same scope keeps its process, on either edge');

    await hub.admin().endSession({ sessionId: a.session });
    await waitUntil(() => !childrenOf(hub.control.child.pid).includes(a.pid), 'scope a process gone');
    assert.ok(childrenOf(hub.control.child.pid).includes(b.pid));
    // The scope starts afresh at its next request.
    assert.notEqual((await pidOf('a')).pid, a.pid);
  });

  test('subscriptions/listen carries list_changed when the configuration changes', async () => {
    const listen = await openListen(hub, 1, 'listen-1', { toolsListChanged: true, resourceSubscriptions: ['x:/y'] });
    const ack = await listen.next();
    assert.equal(ack.method, 'notifications/subscriptions/acknowledged');
    assert.deepEqual(ack.params.notifications, { toolsListChanged: true }, 'no server has x:/y: not subscribed');
    assert.equal(ack.params._meta['io.modelcontextprotocol/subscriptionId'], 'listen-1');

    hub.writeSettings({ mcpServers: { ...SETTINGS.mcpServers, extra: { command: FIXTURE, args: ['--name', 'extra'] } } });
    const changed = await listen.next();
    assert.equal(changed.method, 'notifications/tools/list_changed');
    assert.equal(changed.params._meta['io.modelcontextprotocol/subscriptionId'], 'listen-1');
    const { client } = await modernClient(hub);
    try {
      assert.ok((await client.listTools()).tools.some((t) => t.name === 'extra-echo'));
    } finally {
      await client.close();
    }
    listen.close();
    hub.writeSettings(SETTINGS);
  });

  test('subscriptions/listen carries the updates of the resources it names, until it is closed', async () => {
    const uri = 'test://watched-resource';
    const update = async () => textOf((await modernPost(hub, 0, 'tools/call', { name: 'fx-update_resource', arguments: { uri } })).json.result);
    assert.equal(await update(), `updated ${uri} subscribed=false`);

    const listen = await openListen(hub, 1, 'listen-2', { resourceSubscriptions: [uri, 'x:/y', uri] });
    const ack = await listen.next();
    assert.equal(ack.method, 'notifications/subscriptions/acknowledged');
    assert.deepEqual(ack.params.notifications, { resourceSubscriptions: [uri] }, 'only what a server has, once');
    // The upstream hears the subscription; its update, caused through the other edge,
    // reaches the stream under the subscription's id.
    await waitUntil(async () => (await update()) === `updated ${uri} subscribed=true`, 'the upstream subscription');
    const updated = await listen.next();
    assert.equal(updated.method, 'notifications/resources/updated');
    assert.equal(updated.params.uri, uri);
    assert.equal(updated.params._meta['io.modelcontextprotocol/subscriptionId'], 'listen-2');

    // Closing the stream ends the subscription upstream too.
    listen.close();
    await waitUntil(async () => (await update()) === `updated ${uri} subscribed=false`, 'the upstream unsubscription');

    const bad = await modernPost(hub, 0, 'subscriptions/listen', { notifications: { resourceSubscriptions: [uri, 7] } });
    assert.equal(bad.json.error.code, -32602);
  });
});

describe('scopes of stateless clients end by idle timeout', { timeout: 60_000 }, () => {
  let hub;
  before(async () => {
    hub = await startHub({ ...SETTINGS, hub: { sessionIdleTimeout: '1s', killGracePeriod: 500 } });
  });
  after(async () => { await hub.stop(); });

  test('an idle scope ends with its per-session process; its next request starts afresh', async () => {
    const call = () => modernPost(hub, 0, 'tools/call', { name: 'own-echo', arguments: { message: 'x' } }, { scope: 'idle' });
    const scopeSession = async () => (await hub.admin().listSessions({})).sessions.find((x) => x.scope === 'idle');
    assert.equal((await call()).json.result.content[0].text, 'x');
    const s = await scopeSession();
    const [{ pid }] = (await hub.admin().listInstances({ sessionId: s.sessionId })).instances;
    const t0 = Date.now();
    await waitUntil(async () => !(await scopeSession()), 'the scope ended', 10_000);
    await waitUntil(() => !childrenOf(hub.control.child.pid).includes(pid), 'its process gone', 10_000);
    console.log(`idle scope ended and its process exited ${Date.now() - t0} ms after its last call (timeout 1 s)`);
    assert.equal((await call()).json.result.content[0].text, 'x');
    const again = await scopeSession();
    assert.notEqual(again.sessionId, s.sessionId);
  });
});
