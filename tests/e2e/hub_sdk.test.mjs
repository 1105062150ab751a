// The hub end to end with the official TypeScript SDK client (@modelcontextprotocol/sdk):
// control + edge in front of @modelcontextprotocol/server-everything (stdio) and the C
// fixture at once, over Streamable HTTP and over legacy HTTP+SSE.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

import { BIN_DIR, EVERYTHING, startHub } from './hub.mjs';

const settings = {
  mcpServers: {
    fixture: { command: `${BIN_DIR}/mcphub-fixture` },
    everything: { command: process.execPath, args: [EVERYTHING, 'stdio'] },
  },
  groups: [{ name: 'both', servers: ['fixture', 'everything'] }],
};

function textOf(result) {
  assert.equal(result.content[0].type, 'text');
  return result.content[0].text;
}

async function connect(hub, path, { sse = false, capabilities = { sampling: {}, elicitation: {} } } = {}) {
  const client = new Client({ name: 'e2e', version: '1.0.0' }, { capabilities });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
    role: 'assistant', model: 'e2e-model',
    content: { type: 'text', text: `echo:${req.params.messages[0].content.text}` },
  }));
  client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }));
  const transport = sse ? new SSEClientTransport(hub.url(path)) : new StreamableHTTPClientTransport(hub.url(path));
  await client.connect(transport);
  return { client, transport };
}

describe('hub over Streamable HTTP', { timeout: 60_000 }, () => {
  let hub;
  before(async () => { hub = await startHub(settings); });
  after(async () => { await hub.stop(); });

  test('lists prefixed tools of both servers and calls them', async () => {
    const { client } = await connect(hub, '/mcp');
    const names = (await client.listTools()).tools.map((t) => t.name);
    assert.ok(names.includes('fixture-echo'), names.join(' '));
    assert.ok(names.includes('everything-echo'), names.join(' '));
    assert.equal(textOf(await client.callTool({ name: 'fixture-echo', arguments: { message: 'hello' } })), 'hello');
    const ev = await client.callTool({ name: 'everything-echo', arguments: { message: 'hi' } });
    assert.match(textOf(ev), /hi/);
    const sum = await client.callTool({ name: 'fixture-add', arguments: { a: 2, b: 3 } });
    assert.deepEqual(sum.structuredContent, { sum: 5 });
    await assert.rejects(client.callTool({ name: 'nope-tool', arguments: {} }), /-32602|Unknown tool/);
    await client.close();
  });

  test('a single-server route does not prefix', async () => {
    const { client } = await connect(hub, '/mcp/fixture');
    const names = (await client.listTools()).tools.map((t) => t.name);
    assert.ok(names.includes('echo'));
    assert.ok(!names.some((n) => n.startsWith('fixture-')));
    await client.close();
  });

  test('progress, sampling and elicitation round trips', async () => {
    const { client } = await connect(hub, '/mcp/both');
    await exercise(client);
    await client.close();
  });

  test('prompts and resources', async () => {
    const { client } = await connect(hub, '/mcp/both');
    const prompts = (await client.listPrompts()).prompts.map((p) => p.name);
    assert.ok(prompts.includes('fixture-test_simple_prompt'), prompts.join(' '));
    const got = await client.getPrompt({ name: 'fixture-test_simple_prompt' });
    assert.equal(got.messages[0].role, 'user');
    const resources = (await client.listResources()).resources.map((r) => r.uri);
    assert.ok(resources.includes('test://static-text'), resources.join(' '));
    const read = await client.readResource({ uri: 'test://static-text' });
    assert.equal(read.contents[0].uri, 'test://static-text');
    await client.close();
  });

  test('DELETE ends the session; a 404 is followed by a new initialize', async () => {
    const { client, transport } = await connect(hub, '/mcp');
    const sessionId = transport.sessionId;
    assert.match(sessionId, /^[A-Za-z0-9_-]{22}$/);
    await transport.terminateSession();
    const r = await fetch(hub.url('/mcp'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream',
        'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    assert.equal(r.status, 404);
    await client.close();
    const again = await connect(hub, '/mcp');
    assert.notEqual(again.transport.sessionId, sessionId);
    assert.deepEqual(await again.client.ping(), {});
    await again.client.close();
  });
});

// Everything a client does over either transport, on the group route of both servers.
async function exercise(client) {
  const names = (await client.listTools()).tools.map((t) => t.name);
  assert.ok(names.includes('fixture-echo') && names.includes('everything-echo'), names.join(' '));
  assert.equal(textOf(await client.callTool({ name: 'fixture-echo', arguments: { message: 'old' } })), 'old');
  assert.match(textOf(await client.callTool({ name: 'everything-echo', arguments: { message: 'ev' } })), /ev/);
  const seen = [];
  const slow = await client.callTool({ name: 'fixture-slow', arguments: { steps: 2, delayMs: 20 } },
    undefined, { onprogress: (p) => seen.push(p.progress) });
  assert.equal(textOf(slow), 'done after 2 steps');
  assert.deepEqual(seen, [1, 2]);
  assert.equal(textOf(await client.callTool({ name: 'fixture-sample', arguments: { prompt: 'x' } })),
    'sampled: echo:x');
  assert.equal(textOf(await client.callTool({ name: 'fixture-elicit', arguments: { message: 'who?' } })),
    'action=accept name=Ada');
  const got = await client.getPrompt({ name: 'fixture-test_simple_prompt' });
  assert.equal(got.messages[0].role, 'user');
  const read = await client.readResource({ uri: 'test://static-text' });
  assert.equal(read.contents[0].uri, 'test://static-text');
}

describe('hub over legacy HTTP+SSE', { timeout: 60_000 }, () => {
  let hub;
  before(async () => { hub = await startHub(settings); });
  after(async () => { await hub.stop(); });

  test('tools of both servers, progress, sampling, elicitation, prompts, resources', async () => {
    const { client } = await connect(hub, '/sse/both', { sse: true });
    await exercise(client);
    await client.close();
  });

  test('closing the stream ends the session: its messages get 404', async () => {
    const { client, transport } = await connect(hub, '/sse', { sse: true });
    const endpoint = transport._endpoint; // the URL the endpoint event gave
    assert.match(endpoint.search, /^\?sessionId=[A-Za-z0-9_-]{22}$/);
    await client.close();
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    let status;
    for (let i = 0; i < 50; i++) {
      status = (await fetch(endpoint, { method: 'POST', body: ping,
        headers: { 'content-type': 'application/json' } })).status;
      if (status === 404) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status, 404);
    const again = await connect(hub, '/sse', { sse: true });
    assert.deepEqual(await again.client.ping(), {});
    await again.client.close();
  });
});
