// End-to-end test of mcphub-fixture (tests/fixtures) over stdio, driven by the official MCP
// TypeScript SDK client, plus a few raw-protocol checks the SDK cannot express (malformed
// input, version negotiation, flags). Run: MCPHUB_FIXTURE=path/to/mcphub-fixture node --test
// The prompts, resources, completion, logging and conformance tools: fixture_conformance.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';

import { TEST_TIMEOUT, assertGone, startClient, startRaw, textOf } from './fixture_helpers.mjs';

// The fixture's own tools; fixture_conformance.test.mjs covers the conformance suite's.
const OWN_TOOLS = ['add', 'counter', 'crash', 'echo', 'elicit', 'elicit_again', 'fail', 'notify_list_changed', 'sample',
  'slow', 'update_resource'];
const CONFORMANCE_TOOLS = ['json_schema_2020_12_tool', 'test_audio_content', 'test_elicitation',
  'test_elicitation_sep1034_defaults', 'test_elicitation_sep1330_enums', 'test_embedded_resource',
  'test_error_handling', 'test_image_content', 'test_multiple_content_types', 'test_reconnection',
  'test_sampling', 'test_simple_text', 'test_tool_with_logging', 'test_tool_with_progress',
  // MCP 2026-07-28: server-stateless diagnostics (bridged by a hub) and the MRTR tools.
  'test_missing_capability', 'test_streaming_elicitation', 'test_logging_tool', 'test_trigger_tool_change',
  'test_trigger_prompt_change', 'test_input_required_result_elicitation', 'test_input_required_result_sampling',
  'test_input_required_result_list_roots', 'test_input_required_result_request_state',
  'test_input_required_result_multiple_inputs', 'test_input_required_result_multi_round',
  'test_input_required_result_tampered_state', 'test_input_required_result_capabilities'];

test('initialize reports serverInfo and the capabilities', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const info = client.getServerVersion();
  assert.equal(info.name, 'mcphub-fixture');
  assert.match(info.version, /^\d+\.\d+\.\d+$/);
  assert.deepEqual(client.getServerCapabilities(), {
    tools: { listChanged: true },
    prompts: { listChanged: true },
    resources: { subscribe: true, listChanged: true },
    completions: {},
    logging: {},
  });
  assert.deepEqual(await client.ping(), {});
});

test('--name sets serverInfo.name', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t, { args: ['--name', 'upstream-a'] });
  assert.equal(client.getServerVersion().name, 'upstream-a');
});

test('tools/list has every tool with an object input schema', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((tool) => tool.name).sort(), [...OWN_TOOLS, ...CONFORMANCE_TOOLS].sort());
  for (const tool of tools) {
    assert.equal(tool.inputSchema.type, 'object', `${tool.name} inputSchema.type`);
    assert.equal(typeof tool.description, 'string');
    assert.ok(tool.description.length > 0, `${tool.name} has a description`);
  }
  const add = tools.find((tool) => tool.name === 'add');
  assert.deepEqual(add.inputSchema.required, ['a', 'b']);
  assert.equal(add.outputSchema.type, 'object');
});

test('echo returns the message', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const message = 'hello, fixture: "quotes", newline\n, unicode ✓';
  const result = await client.callTool({ name: 'echo', arguments: { message } });
  assert.equal(textOf(result), message);
  assert.ok(!result.isError);
});

test('add returns the sum as text and structuredContent', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  await client.listTools(); // lets the SDK validate structuredContent against outputSchema
  const r1 = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
  assert.equal(textOf(r1), '5');
  assert.deepEqual(r1.structuredContent, { sum: 5 });
  const r2 = await client.callTool({ name: 'add', arguments: { a: 0.5, b: -2 } });
  assert.equal(textOf(r2), '-1.5');
  assert.deepEqual(r2.structuredContent, { sum: -1.5 });
});

test('counter increments per process and names the pid', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client, pid } = await startClient(t);
  assert.equal(textOf(await client.callTool({ name: 'counter', arguments: {} })), `1 pid=${pid}`);
  assert.equal(textOf(await client.callTool({ name: 'counter', arguments: {} })), `2 pid=${pid}`);
});

test('slow sends increasing progress, then its result', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client, errors } = await startClient(t);
  const progress = [];
  const result = await client.callTool({ name: 'slow', arguments: { steps: 4, delayMs: 20 } },
    undefined, { onprogress: (p) => progress.push(p) });
  assert.equal(textOf(result), 'done after 4 steps');
  assert.deepEqual(progress, [1, 2, 3, 4].map((i) => ({ progress: i, total: 4, message: `step ${i} of 4` })));
  assert.deepEqual(errors, []);
});

test('slow calls overlap and do not block other requests', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const events = [];
  const call = (tag) => client.callTool({ name: 'slow', arguments: { steps: 5, delayMs: 80 } }, undefined,
    { onprogress: (p) => events.push(`${tag}${p.progress}`) })
    .then((r) => { events.push(`${tag}done`); return r; });
  const a = call('A');
  const b = call('B');
  await client.ping();
  events.push('ping');
  const [ra, rb] = await Promise.all([a, b]);
  assert.equal(textOf(ra), 'done after 5 steps');
  assert.equal(textOf(rb), 'done after 5 steps');
  // Order, not wall-clock time: the ping came back before either call ended, and B was
  // making progress while A was still running.
  assert.ok(events.indexOf('ping') < events.indexOf('Adone'), events.join(' '));
  assert.ok(events.indexOf('B1') < events.indexOf('Adone'), events.join(' '));
  assert.ok(events.indexOf('A1') < events.indexOf('Bdone'), events.join(' '));
});

test('fail returns isError with the message', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const r1 = await client.callTool({ name: 'fail', arguments: { message: 'boom' } });
  assert.equal(r1.isError, true);
  assert.equal(textOf(r1), 'boom');
  const r2 = await client.callTool({ name: 'fail', arguments: {} });
  assert.equal(r2.isError, true);
  assert.equal(textOf(r2), 'requested failure');
});

test('invalid arguments give an isError result', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const r = await client.callTool({ name: 'echo', arguments: { message: 42 } });
  assert.equal(r.isError, true);
  assert.equal(textOf(r), 'Invalid arguments for tool echo: arguments.message must be of type string');
  const r2 = await client.callTool({ name: 'add', arguments: { a: 1 } });
  assert.equal(r2.isError, true);
  assert.equal(textOf(r2), 'Invalid arguments for tool add: arguments.b is required');
});

test('sample round-trips through the client sampling handler', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  const { client } = await startClient(t, {
    onSample: async (req) => {
      seen.push(req.params);
      return { model: 'e2e-model', role: 'assistant', content: { type: 'text', text: 'forty-two' } };
    },
  });
  const result = await client.callTool({ name: 'sample', arguments: { prompt: 'meaning of life?' } });
  assert.ok(!result.isError);
  assert.equal(textOf(result), 'sampled: forty-two');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].maxTokens, 100);
  assert.deepEqual(seen[0].messages, [{ role: 'user', content: { type: 'text', text: 'meaning of life?' } }]);
});

test('sample reports a client error as isError', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t, { onSample: async () => { throw new Error('user refused'); } });
  const result = await client.callTool({ name: 'sample', arguments: { prompt: 'x' } });
  assert.equal(result.isError, true);
  assert.equal(textOf(result), 'sampling failed: user refused');
});

test('elicit round-trips through the client elicitation handler', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  let answer = { action: 'accept', content: { name: 'Ada' } };
  const { client } = await startClient(t, {
    onElicit: async (req) => { seen.push(req.params); return answer; },
  });
  const r1 = await client.callTool({ name: 'elicit', arguments: { message: 'Who are you?' } });
  assert.equal(textOf(r1), 'action=accept name=Ada');
  assert.equal(seen[0].message, 'Who are you?');
  assert.deepEqual(seen[0].requestedSchema.required, ['name']);
  assert.equal(seen[0].requestedSchema.properties.name.type, 'string');
  answer = { action: 'decline' };
  const r2 = await client.callTool({ name: 'elicit', arguments: { message: 'Again?' } });
  assert.equal(textOf(r2), 'action=decline');
});

test('elicit_again withdraws its first question and asks a second one', { timeout: TEST_TIMEOUT }, async (t) => {
  // The first question is left unanswered until the second arrives: its request is
  // withdrawn with notifications/cancelled, which aborts the SDK's handler.
  const seen = [];
  let release;
  const { client } = await startClient(t, {
    onElicit: async (req, extra) => {
      seen.push({ message: req.params.message, signal: extra.signal });
      if (seen.length === 1) await new Promise((resolve) => { release = resolve; extra.signal.addEventListener('abort', resolve); });
      return { action: 'accept', content: { name: `Ada ${seen.length}` } };
    },
  });
  const r = await client.callTool({ name: 'elicit_again', arguments: { message: 'Who?', delay_ms: 100 } });
  assert.equal(textOf(r), 'action=accept name=Ada 2');
  assert.deepEqual(seen.map((s) => s.message), ['Who?', 'Who? (again)']);
  assert.equal(seen[0].signal.aborted, true, 'the first request was withdrawn');
  release?.();
});

test('sample and elicit need the client capabilities', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t, { capabilities: {} });
  const r1 = await client.callTool({ name: 'sample', arguments: { prompt: 'x' } });
  assert.equal(r1.isError, true);
  assert.equal(textOf(r1), 'The client did not declare the sampling capability');
  const r2 = await client.callTool({ name: 'elicit', arguments: { message: 'x' } });
  assert.equal(r2.isError, true);
  assert.equal(textOf(r2), 'The client did not declare the elicitation capability (form mode)');
});

test('cancelling a slow call rejects it; the server keeps answering', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client, errors } = await startClient(t);
  const controller = new AbortController();
  const pending = client.callTool({ name: 'slow', arguments: { steps: 100, delayMs: 30 } }, undefined, {
    signal: controller.signal,
    onprogress: () => controller.abort('test cancels'),
  });
  await assert.rejects(pending);
  // The ping goes out after notifications/cancelled, so once it is answered the fixture has
  // seen the cancellation; progress it sent before that raced the cancel legitimately. From
  // then on, a response or progress for the call would reach the SDK as an "unknown message
  // ID" / "unknown token" error; wait several steps for one.
  assert.deepEqual(await client.ping(), {});
  const before = errors.length;
  await sleep(200);
  assert.deepEqual(errors.slice(before).map(String), []);
  assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: 'still here' } })), 'still here');
});

test('cancelling a sample call withdraws the sampling request', { timeout: TEST_TIMEOUT }, async (t) => {
  let sawRequest;
  const requested = new Promise((resolve) => { sawRequest = resolve; });
  let handlerAborted;
  const aborted = new Promise((resolve) => { handlerAborted = resolve; });
  const { client, errors } = await startClient(t, {
    onSample: (req, extra) => new Promise((resolve) => {
      sawRequest();
      extra.signal.addEventListener('abort', () => {
        handlerAborted(String(extra.signal.reason));
        resolve({ model: 'm', role: 'assistant', content: { type: 'text', text: 'too late' } });
      });
    }),
  });
  const controller = new AbortController();
  const pending = client.callTool({ name: 'sample', arguments: { prompt: 'wait' } }, undefined,
    { signal: controller.signal });
  await requested;
  controller.abort('test cancels');
  await assert.rejects(pending);
  await aborted; // the fixture sent notifications/cancelled for its fx-N request
  assert.deepEqual(await client.ping(), {});
  assert.deepEqual(errors.map(String), []);
});

test('unknown tool is a JSON-RPC -32602 error', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  await assert.rejects(client.callTool({ name: 'no-such-tool', arguments: {} }), (err) => {
    assert.ok(err instanceof McpError, String(err));
    assert.equal(err.code, ErrorCode.InvalidParams);
    assert.match(err.message, /Unknown tool: no-such-tool/);
    return true;
  });
  assert.deepEqual(await client.ping(), {});
});

test('crash makes the pending call fail promptly', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client, pid, stderr } = await startClient(t);
  let closed;
  const onClosed = new Promise((resolve) => { closed = resolve; });
  client.onclose = () => closed();
  const started = Date.now();
  await assert.rejects(client.callTool({ name: 'crash', arguments: {} }), (err) => {
    assert.ok(err instanceof McpError, String(err));
    assert.equal(err.code, ErrorCode.ConnectionClosed);
    return true;
  });
  assert.ok(Date.now() - started < 5000, 'the call failed within 5 s');
  await onClosed;
  await assertGone(pid);
  assert.match(stderr(), /msg=crash signal=SIGABRT/);
  // The child ran in our working directory; RLIMIT_CORE 0 must have kept it from dumping.
  for (const name of ['core', `core.${pid}`]) {
    const st = statSync(name, { throwIfNoEntry: false });
    assert.ok(!st || st.mtimeMs < started, `${name} was written by the crash`);
  }
});

// ---- raw protocol: the fixture spawned directly, one JSON line at a time ----

test('raw: malformed and over-long lines get JSON-RPC errors, the server survives', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  const expectError = async (line, id, code) => {
    raw.send(line);
    const msg = await raw.next();
    assert.equal(msg.jsonrpc, '2.0');
    assert.equal(msg.id, id, JSON.stringify(msg));
    assert.equal(msg.error?.code, code, JSON.stringify(msg));
    return msg;
  };
  await expectError('this is not json', null, -32700);
  await expectError('{"jsonrpc":"2.0","id":1,"method":', null, -32700);
  await expectError('[]', null, -32600);
  await expectError('42', null, -32600);
  await expectError({ jsonrpc: '2.0', id: 2 }, 2, -32600);
  await expectError({ jsonrpc: '1.0', id: 3, method: 'ping' }, 3, -32600);
  await expectError({ jsonrpc: '2.0', id: 4.5, method: 'ping' }, null, -32600);
  await expectError({ jsonrpc: '2.0', id: 5, method: 'no/such/method' }, 5, -32601);
  await expectError({ jsonrpc: '2.0', id: 6, method: 'ping', params: [1] }, 6, -32602);
  await expectError({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: {} }, 7, -32602);
  // One line over the 4 MiB limit, in a single write and then as a valid-looking request.
  const over = await expectError('x'.repeat(4 * 1024 * 1024 + 1), null, -32600);
  assert.match(over.error.message, /longer than 4194304 bytes/);
  await expectError(JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/call',
    params: { name: 'echo', arguments: { message: 'y'.repeat(5 * 1024 * 1024) } } }), null, -32600);
  // Unknown notifications and cancellations of unknown requests are ignored silently.
  raw.send({ jsonrpc: '2.0', method: 'notifications/whatever' });
  raw.send({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 999 } });
  raw.send({ jsonrpc: '2.0', id: 'fx-999', result: {} }); // a response nobody waits for
  raw.send({ jsonrpc: '2.0', id: 9, method: 'ping' });
  assert.deepEqual(await raw.next(), { jsonrpc: '2.0', id: 9, result: {} });
  // A large message under the limit still works (the line buffer grows up to the limit).
  const big = 'z'.repeat(3 * 1024 * 1024);
  raw.send({ jsonrpc: '2.0', id: 10, method: 'tools/call', params: { name: 'echo', arguments: { message: big } } });
  const echoed = await raw.next();
  assert.equal(echoed.id, 10);
  assert.equal(echoed.result.content[0].text, big);
  await raw.finish();
});

test('raw: initialize echoes supported versions and answers others with 2025-11-25', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  const init = async (id, protocolVersion) => {
    raw.send({ jsonrpc: '2.0', id, method: 'initialize',
      params: { protocolVersion, capabilities: {}, clientInfo: { name: 'raw', version: '0' } } });
    const msg = await raw.next();
    assert.equal(msg.id, id);
    return msg.result.protocolVersion;
  };
  for (const v of ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']) assert.equal(await init(v, v), v);
  assert.equal(await init('old', '2024-10-07'), '2025-11-25');
  assert.equal(await init('future', '2099-01-01'), '2025-11-25');
  raw.send({ jsonrpc: '2.0', id: 'bad', method: 'initialize', params: { capabilities: {} } });
  assert.equal((await raw.next()).error.code, -32602);
  await raw.finish();
});

test('raw: progress tokens are echoed as sent, and cancellation stops the call', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  raw.send({ jsonrpc: '2.0', id: 1, method: 'tools/call',
    params: { name: 'slow', arguments: { steps: 2, delayMs: 1 }, _meta: { progressToken: 77 } } });
  assert.deepEqual((await raw.next()).params, { progressToken: 77, progress: 1, total: 2, message: 'step 1 of 2' });
  assert.deepEqual((await raw.next()).params, { progressToken: 77, progress: 2, total: 2, message: 'step 2 of 2' });
  assert.deepEqual((await raw.next()).result, { content: [{ type: 'text', text: 'done after 2 steps' }] });
  // A slow call without a token sends no progress; cancelled, it sends nothing at all.
  raw.send({ jsonrpc: '2.0', id: 'slow-2', method: 'tools/call', params: { name: 'slow', arguments: { steps: 3, delayMs: 50 } } });
  raw.send({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'slow-2', reason: 'test' } });
  await sleep(250);
  raw.send({ jsonrpc: '2.0', id: 3, method: 'ping' });
  assert.deepEqual(await raw.next(), { jsonrpc: '2.0', id: 3, result: {} });
  await raw.finish();
});

test('raw: stdin EOF with calls in flight exits 0', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  raw.send({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'slow', arguments: { steps: 100, delayMs: 1000 } } });
  raw.send({ jsonrpc: '2.0', id: 2, method: 'ping' });
  assert.deepEqual(await raw.next(), { jsonrpc: '2.0', id: 2, result: {} });
  await raw.finish();
});

test('raw: FIXTURE_STDERR_LINES and flags', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t, { env: { FIXTURE_STDERR_LINES: '3' } });
  raw.send({ jsonrpc: '2.0', id: 1, method: 'ping' });
  await raw.next();
  await raw.finish();
  const lines = raw.stderr().split('\n').filter((l) => l.includes('msg=stderr_line'));
  assert.deepEqual(lines, [1, 2, 3].map((i) => `level=info msg=stderr_line n=${i} of=3`));

  const help = startRaw(t, { args: ['--help'] });
  let out = '';
  help.child.stdout.removeAllListeners('data');
  help.child.stdout.on('data', (d) => { out += d; });
  assert.deepEqual(await help.exited, { code: 0, signal: null });
  assert.match(out, /usage: mcphub-fixture/);

  const bad = startRaw(t, { args: ['--bogus'] });
  assert.deepEqual(await bad.exited, { code: 2, signal: null });
  assert.match(bad.stderr(), /bad argument '--bogus'/);
});
