// End-to-end test of what mcphub-fixture implements for the MCP conformance suite's server
// scenarios (@modelcontextprotocol/conformance): prompts, resources and the template,
// subscriptions, completion, logging, list_changed, and the test_* tools, driven over stdio by
// the official SDK client with exact assertions; raw lines for the error paths.
// Run: MCPHUB_FIXTURE=path/to/mcphub-fixture node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';

import {
  CallToolResultSchema,
  ErrorCode,
  LoggingMessageNotificationSchema,
  McpError,
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

import { TEST_TIMEOUT, startClient, startRaw, textOf } from './fixture_helpers.mjs';

const RESOURCE_NOT_FOUND = -32002;

// Collects the notifications of one schema; next() waits for the next unseen one.
function collect(client, schema) {
  const seen = [];
  const waiters = [];
  client.setNotificationHandler(schema, (n) => {
    seen.push(n.params);
    if (waiters.length) waiters.shift()();
  });
  let taken = 0;
  return {
    seen,
    next: async () => {
      if (taken >= seen.length) await new Promise((resolve) => waiters.push(resolve));
      return seen[taken++];
    },
  };
}

async function rejectsWith(promise, code, message) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof McpError, String(err));
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  });
}

// CRC-32 as PNG uses it (zlib.crc32 needs Node 20.15 or 22.2).
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

// Checks the fixture's PNG byte for byte: signature, chunk CRCs, a 1x1 RGB IHDR, and an IDAT
// that inflates to one red pixel.
function assertTinyPng(base64) {
  const png = Buffer.from(base64, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const chunks = {};
  for (let off = 8; off < png.length;) {
    const len = png.readUInt32BE(off);
    const type = png.subarray(off + 4, off + 8).toString('latin1');
    const data = png.subarray(off + 8, off + 8 + len);
    assert.equal(png.readUInt32BE(off + 8 + len), crc32(png.subarray(off + 4, off + 8 + len)), `${type} CRC`);
    chunks[type] = data;
    off += 12 + len;
  }
  assert.deepEqual(Object.keys(chunks), ['IHDR', 'IDAT', 'IEND']);
  assert.equal(chunks.IHDR.readUInt32BE(0), 1);
  assert.equal(chunks.IHDR.readUInt32BE(4), 1);
  assert.deepEqual([...chunks.IHDR.subarray(8)], [8, 2, 0, 0, 0]);
  assert.deepEqual([...inflateSync(chunks.IDAT)], [0, 255, 0, 0]);
}

function assertTinyWav(base64) {
  const wav = Buffer.from(base64, 'base64');
  assert.equal(wav.subarray(0, 4).toString('latin1'), 'RIFF');
  assert.equal(wav.readUInt32LE(4), wav.length - 8);
  assert.equal(wav.subarray(8, 16).toString('latin1'), 'WAVEfmt ');
  assert.equal(wav.readUInt32LE(16), 16);
  assert.equal(wav.readUInt16LE(20), 1, 'PCM');
  assert.equal(wav.readUInt16LE(22), 1, 'mono');
  assert.equal(wav.readUInt32LE(24), 8000, 'sample rate');
  assert.equal(wav.readUInt16LE(34), 8, 'bits per sample');
  assert.equal(wav.subarray(36, 40).toString('latin1'), 'data');
  assert.equal(wav.readUInt32LE(40), wav.length - 44);
}

const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mP4z8AAAAMBAQD3A0FDAAAAAElFTkSuQmCC';
const WAV_BASE64 = 'UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==';
const IMAGE = { type: 'image', data: PNG_BASE64, mimeType: 'image/png' };

test('the binary payloads are a valid PNG and a valid WAV', () => {
  assertTinyPng(PNG_BASE64);
  assertTinyWav(WAV_BASE64);
});

// ---- prompts ----

test('prompts/list names the conformance prompts with their arguments', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const { prompts, nextCursor } = await client.listPrompts();
  assert.equal(nextCursor, undefined);
  assert.deepEqual(prompts.map((p) => [p.name, p.arguments]), [
    ['test_simple_prompt', []],
    ['test_prompt_with_arguments', [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ]],
    ['test_prompt_with_embedded_resource', [
      { name: 'resourceUri', description: 'URI of the resource to embed', required: true },
    ]],
    ['test_prompt_with_image', []],
    ['test_input_required_result_prompt', []],
  ]);
  for (const p of prompts) {
    assert.ok(p.title && p.description, `${p.name} has a title and a description`);
  }
});

test('prompts/get renders every prompt exactly', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const messages = async (name, args) => (await client.getPrompt({ name, arguments: args })).messages;
  assert.deepEqual(await messages('test_simple_prompt'), [
    { role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } },
  ]);
  assert.deepEqual(await messages('test_prompt_with_arguments', { arg1: 'hello', arg2: 'world' }), [
    { role: 'user', content: { type: 'text', text: "Prompt with arguments: arg1='hello', arg2='world'" } },
  ]);
  assert.deepEqual(await messages('test_prompt_with_embedded_resource', { resourceUri: 'test://example-resource' }), [
    {
      role: 'user',
      content: {
        type: 'resource',
        resource: { uri: 'test://example-resource', mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
      },
    },
    { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } },
  ]);
  assert.deepEqual(await messages('test_prompt_with_image'), [
    { role: 'user', content: IMAGE },
    { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } },
  ]);
  const full = await client.getPrompt({ name: 'test_simple_prompt' });
  assert.equal(full.description, 'A prompt without arguments: one user text message.');
});

test('prompts/get: unknown prompt and missing argument are -32602', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  await rejectsWith(client.getPrompt({ name: 'no_such_prompt' }), ErrorCode.InvalidParams, /Unknown prompt: no_such_prompt/);
  await rejectsWith(client.getPrompt({ name: 'test_prompt_with_arguments', arguments: { arg1: 'a' } }),
    ErrorCode.InvalidParams, /Invalid arguments for prompt test_prompt_with_arguments: arg2 is required/);
});

// ---- resources ----

test('resources/list and resources/templates/list', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const { resources } = await client.listResources();
  assert.deepEqual(resources.map((r) => [r.uri, r.name, r.mimeType]), [
    ['test://static-text', 'static-text', 'text/plain'],
    ['test://static-binary', 'static-binary', 'image/png'],
    ['test://watched-resource', 'watched-resource', 'text/plain'],
  ]);
  for (const r of resources) assert.ok(r.title && r.description, `${r.uri} has a title and a description`);
  const { resourceTemplates } = await client.listResourceTemplates();
  assert.deepEqual(resourceTemplates, [{
    uriTemplate: 'test://template/{id}/data',
    name: 'template-data',
    title: 'Template data',
    description: 'JSON data for any id: test://template/{id}/data.',
    mimeType: 'application/json',
  }]);
});

test('resources/read serves text, binary and the template', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const read = async (uri) => (await client.readResource({ uri })).contents;
  assert.deepEqual(await read('test://static-text'), [
    { uri: 'test://static-text', mimeType: 'text/plain', text: 'This is the content of the static text resource.' },
  ]);
  assert.deepEqual(await read('test://static-binary'), [
    { uri: 'test://static-binary', mimeType: 'image/png', blob: PNG_BASE64 },
  ]);
  assert.deepEqual(await read('test://watched-resource'), [
    { uri: 'test://watched-resource', mimeType: 'text/plain', text: 'This resource is watched for updates.' },
  ]);
  assert.deepEqual(await read('test://template/123/data'), [{
    uri: 'test://template/123/data',
    mimeType: 'application/json',
    text: '{"id":"123","templateTest":true,"data":"Data for ID: 123"}',
  }]);
  // Whatever the id holds, the text stays valid JSON.
  const odd = 'a"b\\c';
  const [content] = await read(`test://template/${odd}/data`);
  assert.deepEqual(JSON.parse(content.text), { id: odd, templateTest: true, data: `Data for ID: ${odd}` });
});

test('resources/read of an unknown URI is -32002 with the URI in data', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  for (const uri of ['test://nonexistent', 'test://template//data', 'test://template/a/b/data', 'test://static-text/']) {
    await assert.rejects(client.readResource({ uri }), (err) => {
      assert.ok(err instanceof McpError, String(err));
      assert.equal(err.code, RESOURCE_NOT_FOUND);
      assert.match(err.message, new RegExp(`Resource not found: ${uri}`));
      assert.deepEqual(err.data, { uri });
      return true;
    });
  }
});

test('subscribe, update_resource, unsubscribe', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const updates = collect(client, ResourceUpdatedNotificationSchema);
  const update = async (uri) => textOf(await client.callTool({ name: 'update_resource', arguments: { uri } }));
  const uri = 'test://watched-resource';

  assert.equal(await update(uri), `updated ${uri} subscribed=false`);
  assert.deepEqual(await client.subscribeResource({ uri }), {});
  assert.deepEqual(await client.subscribeResource({ uri }), {}, 'subscribing twice is fine');
  assert.equal(await update(uri), `updated ${uri} subscribed=true`);
  assert.deepEqual(await updates.next(), { uri });
  // Template resources can be watched too; other subscriptions are independent.
  assert.deepEqual(await client.subscribeResource({ uri: 'test://template/7/data' }), {});
  assert.equal(await update('test://template/7/data'), 'updated test://template/7/data subscribed=true');
  assert.deepEqual(await updates.next(), { uri: 'test://template/7/data' });
  assert.deepEqual(await client.unsubscribeResource({ uri }), {});
  assert.deepEqual(await client.unsubscribeResource({ uri }), {}, 'unsubscribing twice is fine');
  assert.equal(await update(uri), `updated ${uri} subscribed=false`);
  assert.deepEqual(await client.ping(), {});
  assert.equal(updates.seen.length, 2, JSON.stringify(updates.seen));

  await rejectsWith(client.subscribeResource({ uri: 'test://nope' }), RESOURCE_NOT_FOUND, /Resource not found: test:\/\/nope/);
  const bad = await client.callTool({ name: 'update_resource', arguments: { uri: 'test://nope' } });
  assert.equal(bad.isError, true);
  assert.equal(textOf(bad), 'Unknown resource: test://nope');
});

// ---- completion ----

test('completion/complete for prompt arguments and the template variable', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const complete = async (ref, name, value) => (await client.complete({ ref, argument: { name, value } })).completion;
  const prompt = { type: 'ref/prompt', name: 'test_prompt_with_arguments' };
  assert.deepEqual(await complete(prompt, 'arg1', 'par'), { values: ['paris', 'park', 'party'], total: 3, hasMore: false });
  assert.deepEqual(await complete(prompt, 'arg1', 'pari'), { values: ['paris'], total: 1, hasMore: false });
  assert.deepEqual(await complete(prompt, 'arg1', 'test'), { values: [], total: 0, hasMore: false });
  assert.deepEqual(await complete(prompt, 'arg2', 'w'), { values: ['world', 'wonder', 'winter'], total: 3, hasMore: false });
  assert.deepEqual(await complete({ type: 'ref/prompt', name: 'test_prompt_with_embedded_resource' }, 'resourceUri', 'test://static'),
    { values: ['test://static-text', 'test://static-binary'], total: 2, hasMore: false });
  const template = { type: 'ref/resource', uri: 'test://template/{id}/data' };
  assert.deepEqual(await complete(template, 'id', '1'), { values: ['1', '123'], total: 2, hasMore: false });
  assert.deepEqual(await complete(template, 'id', ''), { values: ['1', '2', '3', '123'], total: 4, hasMore: false });

  await rejectsWith(complete({ type: 'ref/prompt', name: 'nope' }, 'arg1', ''), ErrorCode.InvalidParams, /Unknown prompt: nope/);
  await rejectsWith(complete(prompt, 'arg9', ''), ErrorCode.InvalidParams, /Prompt test_prompt_with_arguments has no argument arg9/);
  await rejectsWith(complete({ type: 'ref/resource', uri: 'test://x/{y}' }, 'y', ''), ErrorCode.InvalidParams,
    /Unknown resource template: test:\/\/x\/\{y\}/);
  await rejectsWith(complete(template, 'name', ''), ErrorCode.InvalidParams, /has no variable name/);
});

// ---- logging ----

const LOGS = ['Tool execution started', 'Tool processing data', 'Tool execution completed']
  .map((data) => ({ level: 'info', logger: 'test_tool_with_logging', data }));

test('test_tool_with_logging logs three info messages; setLevel filters them', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const logs = collect(client, LoggingMessageNotificationSchema);
  const call = async () => textOf(await client.callTool({ name: 'test_tool_with_logging', arguments: {} }));

  // Before any logging/setLevel the fixture sends every level.
  const started = Date.now();
  assert.equal(await call(), 'Tool with logging executed successfully');
  assert.ok(Date.now() - started >= 90, 'two 50 ms pauses between the messages');
  assert.deepEqual([await logs.next(), await logs.next(), await logs.next()], LOGS);

  assert.deepEqual(await client.setLoggingLevel('debug'), {});
  await call();
  assert.deepEqual([await logs.next(), await logs.next(), await logs.next()], LOGS);

  assert.deepEqual(await client.setLoggingLevel('notice'), {});
  await call();
  assert.deepEqual(await client.setLoggingLevel('info'), {});
  await call();
  assert.deepEqual([await logs.next(), await logs.next(), await logs.next()], LOGS);
  assert.equal(logs.seen.length, 9, 'nothing was logged at level notice');
});

// ---- tools with content ----

test('content tools return exactly the blocks the suite describes', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const call = (name) => client.callTool({ name, arguments: {} });
  assert.deepEqual(await call('test_simple_text'), {
    content: [{ type: 'text', text: 'This is a simple text response for testing.' }],
  });
  assert.deepEqual(await call('test_image_content'), { content: [IMAGE] });
  assert.deepEqual(await call('test_audio_content'), {
    content: [{ type: 'audio', data: WAV_BASE64, mimeType: 'audio/wav' }],
  });
  assert.deepEqual(await call('test_embedded_resource'), {
    content: [{
      type: 'resource',
      resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
    }],
  });
  assert.deepEqual(await call('test_multiple_content_types'), {
    content: [
      { type: 'text', text: 'Multiple content types test:' },
      IMAGE,
      {
        type: 'resource',
        resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' },
      },
    ],
  });
  assert.deepEqual(await call('test_error_handling'), {
    content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }],
    isError: true,
  });
  const started = Date.now();
  assert.equal(textOf(await call('test_reconnection')), 'Reconnection test completed');
  assert.ok(Date.now() - started >= 90, 'test_reconnection answers after about 100 ms');
});

test('test_tool_with_progress reports 0, 50, 100 of 100', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client, errors } = await startClient(t);
  const progress = [];
  const result = await client.callTool({ name: 'test_tool_with_progress', arguments: {} }, undefined,
    { onprogress: (p) => progress.push(p) });
  assert.equal(textOf(result), 'Tool with progress executed successfully');
  assert.deepEqual(progress, [{ progress: 0, total: 100 }, { progress: 50, total: 100 }, { progress: 100, total: 100 }]);
  // Without a progress token: the same result, no notifications (an unknown token would show
  // up in errors).
  const plain = await client.request({ method: 'tools/call', params: { name: 'test_tool_with_progress', arguments: {} } },
    CallToolResultSchema);
  assert.equal(textOf(plain), 'Tool with progress executed successfully');
  assert.deepEqual(errors, []);
});

// ---- sampling and elicitation ----

test('test_sampling asks the client and returns "LLM response: ..."', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  const { client } = await startClient(t, {
    onSample: async (req) => {
      seen.push(req.params);
      return { model: 'm', role: 'assistant', content: { type: 'text', text: 'This is a test response' }, stopReason: 'endTurn' };
    },
  });
  const result = await client.callTool({ name: 'test_sampling', arguments: { prompt: 'Test prompt for sampling' } });
  assert.deepEqual(result, { content: [{ type: 'text', text: 'LLM response: This is a test response' }] });
  assert.deepEqual(seen, [{
    messages: [{ role: 'user', content: { type: 'text', text: 'Test prompt for sampling' } }],
    maxTokens: 100,
  }]);
});

test('test_sampling and test_elicitation need the client capabilities', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t, { capabilities: {} });
  const r1 = await client.callTool({ name: 'test_sampling', arguments: { prompt: 'x' } });
  assert.equal(r1.isError, true);
  assert.equal(textOf(r1), 'The client did not declare the sampling capability');
  for (const [name, args] of [['test_elicitation', { message: 'x' }], ['test_elicitation_sep1034_defaults', {}],
    ['test_elicitation_sep1330_enums', {}]]) {
    const r = await client.callTool({ name, arguments: args });
    assert.equal(r.isError, true, name);
    assert.equal(textOf(r), 'The client did not declare the elicitation capability (form mode)');
  }
});

test('test_elicitation asks for username and email', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  let answer = { action: 'accept', content: { username: 'testuser', email: 'test@example.com' } };
  const { client } = await startClient(t, { onElicit: async (req) => { seen.push(req.params); return answer; } });
  const call = async () => textOf(await client.callTool({ name: 'test_elicitation', arguments: { message: 'Please provide your information' } }));
  assert.equal(await call(), 'User response: action=accept, content={"username":"testuser","email":"test@example.com"}');
  assert.deepEqual(seen[0], {
    message: 'Please provide your information',
    requestedSchema: {
      type: 'object',
      properties: {
        username: { type: 'string', description: 'Your username' },
        email: { type: 'string', description: 'Your email address' },
      },
      required: ['username', 'email'],
    },
  });
  answer = { action: 'decline' };
  assert.equal(await call(), 'User response: action=decline');
  answer = { action: 'cancel' };
  assert.equal(await call(), 'User response: action=cancel');
});

test('test_elicitation_sep1034_defaults sends defaults for every primitive type', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  const { client } = await startClient(t, {
    onElicit: async (req) => {
      seen.push(req.params);
      return { action: 'accept', content: { name: 'Jane Smith', age: 25, score: 88, status: 'inactive', verified: false } };
    },
  });
  const result = await client.callTool({ name: 'test_elicitation_sep1034_defaults', arguments: {} });
  assert.equal(textOf(result),
    'Elicitation completed: action=accept, content={"name":"Jane Smith","age":25,"score":88,"status":"inactive","verified":false}');
  assert.equal(seen[0].message, 'Please review and update the form fields with defaults');
  assert.deepEqual(seen[0].requestedSchema, {
    type: 'object',
    properties: {
      name: { type: 'string', description: 'User name', default: 'John Doe' },
      age: { type: 'integer', description: 'User age', default: 30 },
      score: { type: 'number', description: 'User score', default: 95.5 },
      status: { type: 'string', description: 'User status', enum: ['active', 'inactive', 'pending'], default: 'active' },
      verified: { type: 'boolean', description: 'Verification status', default: true },
    },
  });
});

test('test_elicitation_sep1330_enums sends the five enum variants', { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = [];
  const content = { untitledSingle: 'option1', titledSingle: 'value1', legacyEnum: 'opt1',
    untitledMulti: ['option1', 'option2'], titledMulti: ['value1', 'value2'] };
  const { client } = await startClient(t, {
    onElicit: async (req) => { seen.push(req.params); return { action: 'accept', content }; },
  });
  const result = await client.callTool({ name: 'test_elicitation_sep1330_enums', arguments: {} });
  assert.equal(textOf(result), `Elicitation completed: action=accept, content=${JSON.stringify(content)}`);
  const choices = (kind) => ['First', 'Second', 'Third'].map((ordinal, i) => ({ const: `value${i + 1}`, title: `${ordinal} ${kind}` }));
  assert.equal(seen[0].message, 'Please select options from the enum fields');
  assert.deepEqual(seen[0].requestedSchema, {
    type: 'object',
    properties: {
      untitledSingle: { type: 'string', title: 'Untitled single select', enum: ['option1', 'option2', 'option3'] },
      titledSingle: { type: 'string', title: 'Titled single select', oneOf: choices('Option') },
      legacyEnum: { type: 'string', title: 'Legacy titled enum', enum: ['opt1', 'opt2', 'opt3'],
        enumNames: ['Option One', 'Option Two', 'Option Three'] },
      untitledMulti: { type: 'array', title: 'Untitled multi select', items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
      titledMulti: { type: 'array', title: 'Titled multi select', items: { anyOf: choices('Choice') } },
    },
  });
});

// ---- JSON Schema 2020-12 ----

test('json_schema_2020_12_tool keeps its 2020-12 keywords and checks what it can', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const { tools } = await client.listTools();
  const tool = tools.find((x) => x.name === 'json_schema_2020_12_tool');
  assert.deepEqual(tool.inputSchema, {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    $defs: {
      address: {
        $anchor: 'addressDef',
        type: 'object',
        properties: { street: { type: 'string' }, city: { type: 'string' } },
      },
    },
    properties: {
      name: { type: 'string' },
      address: { $ref: '#/$defs/address' },
      contactMethod: { type: 'string', enum: ['phone', 'email'] },
      phone: { type: 'string' },
      email: { type: 'string' },
    },
    allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
    if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
    then: { required: ['phone'] },
    else: { required: ['email'] },
    additionalProperties: false,
  });
  const call = (args) => client.callTool({ name: 'json_schema_2020_12_tool', arguments: args });
  assert.equal(textOf(await call({ name: 'Ada', email: 'ada@example.com' })),
    'Received arguments: {"name":"Ada","email":"ada@example.com"}');
  const extra = await call({ name: 'Ada', age: 36 });
  assert.equal(extra.isError, true);
  assert.equal(textOf(extra), 'Invalid arguments for tool json_schema_2020_12_tool: arguments.age is not an allowed property');
  const method = await call({ contactMethod: 'fax' });
  assert.equal(method.isError, true);
  assert.equal(textOf(method),
    'Invalid arguments for tool json_schema_2020_12_tool: arguments.contactMethod must be one of "phone", "email"');
});

// ---- list_changed ----

test('notify_list_changed sends each list_changed notification', { timeout: TEST_TIMEOUT }, async (t) => {
  const { client } = await startClient(t);
  const lists = {
    tools: collect(client, ToolListChangedNotificationSchema),
    prompts: collect(client, PromptListChangedNotificationSchema),
    resources: collect(client, ResourceListChangedNotificationSchema),
  };
  for (const list of ['tools', 'prompts', 'resources']) {
    const result = await client.callTool({ name: 'notify_list_changed', arguments: { list } });
    assert.equal(textOf(result), `sent notifications/${list}/list_changed`);
    assert.deepEqual(await lists[list].next(), {});
  }
  assert.deepEqual(Object.values(lists).map((l) => l.seen.length), [1, 1, 1]);
  const bad = await client.callTool({ name: 'notify_list_changed', arguments: { list: 'roots' } });
  assert.equal(bad.isError, true);
  assert.equal(textOf(bad), 'Invalid arguments for tool notify_list_changed: arguments.list must be one of "tools", "prompts", "resources"');
});

// ---- raw protocol: the error paths ----

test('raw: malformed params of the new methods are -32602', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  let id = 0;
  const call = async (method, params) => {
    raw.send({ jsonrpc: '2.0', id: ++id, method, ...(params === undefined ? {} : { params }) });
    const msg = await raw.next();
    assert.equal(msg.id, id, JSON.stringify(msg));
    return msg;
  };
  const expectError = async (method, params, code, message) => {
    const msg = await call(method, params);
    assert.equal(msg.error?.code, code, `${method} ${JSON.stringify(params)}: ${JSON.stringify(msg)}`);
    if (message) assert.match(msg.error.message, message);
  };
  for (const method of ['prompts/list', 'resources/list', 'resources/templates/list']) {
    assert.ok((await call(method)).result, method);
    await expectError(method, { cursor: 'x' }, -32602, /Invalid cursor/);
    await expectError(method, { cursor: 5 }, -32602, new RegExp(`Invalid ${method} params`));
  }
  await expectError('prompts/get', {}, -32602, /Invalid prompts\/get params/);
  await expectError('prompts/get', { name: 'test_simple_prompt', arguments: [] }, -32602, /arguments must be an object/);
  await expectError('prompts/get', { name: 'test_prompt_with_arguments', arguments: { arg1: 1, arg2: 'b' } }, -32602,
    /arg1 must be a string/);
  for (const method of ['resources/read', 'resources/subscribe', 'resources/unsubscribe']) {
    await expectError(method, {}, -32602, new RegExp(`Invalid ${method} params`));
    await expectError(method, { uri: 7 }, -32602);
  }
  assert.deepEqual(await call('resources/read', { uri: 'test://nope' }), {
    jsonrpc: '2.0', id, error: { code: -32002, message: 'Resource not found: test://nope', data: { uri: 'test://nope' } },
  });
  await expectError('completion/complete', {}, -32602, /Invalid completion\/complete params/);
  await expectError('completion/complete', { ref: { type: 'ref/prompt', name: 'test_simple_prompt' }, argument: { name: 'a' } }, -32602);
  await expectError('completion/complete', { ref: { type: 'ref/other', name: 'x' }, argument: { name: 'a', value: '' } }, -32602,
    /ref must be/);
  await expectError('completion/complete', { ref: { type: 'ref/resource', name: 'x' }, argument: { name: 'a', value: '' } }, -32602,
    /ref must be/);
  await expectError('logging/setLevel', {}, -32602, /Invalid logging\/setLevel params/);
  await expectError('logging/setLevel', { level: 'verbose' }, -32602, /Invalid log level: verbose/);
  for (const level of ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency']) {
    assert.deepEqual((await call('logging/setLevel', { level })).result, {});
  }
  // At emergency, the logging tool's info messages are all dropped: the next line is the result.
  const result = await call('tools/call', { name: 'test_tool_with_logging', arguments: {} });
  assert.deepEqual(result.result, { content: [{ type: 'text', text: 'Tool with logging executed successfully' }] });
  await raw.finish();
});

test('raw: progress of test_tool_with_progress carries the token and no message', { timeout: TEST_TIMEOUT }, async (t) => {
  const raw = startRaw(t);
  raw.send({ jsonrpc: '2.0', id: 1, method: 'tools/call',
    params: { name: 'test_tool_with_progress', arguments: {}, _meta: { progressToken: 'progress-test-1' } } });
  for (const progress of [0, 50, 100]) {
    assert.deepEqual(await raw.next(), { jsonrpc: '2.0', method: 'notifications/progress',
      params: { progressToken: 'progress-test-1', progress, total: 100 } });
  }
  assert.deepEqual((await raw.next()).result, { content: [{ type: 'text', text: 'Tool with progress executed successfully' }] });
  await raw.finish();
});
