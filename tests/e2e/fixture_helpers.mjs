// Shared helpers for the e2e tests of mcphub-fixture (tests/fixtures): the fixture under the
// official MCP TypeScript SDK stdio client, or spawned raw and spoken to one JSON line at a time.
// startClient and startRaw register a t.after hook that stops the child and checks it is gone.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport, getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

export const FIXTURE = process.env.MCPHUB_FIXTURE;
if (!FIXTURE) {
  throw new Error('MCPHUB_FIXTURE is not set: point it at the mcphub-fixture executable ' +
    '(ctest sets it; by hand: MCPHUB_FIXTURE=build/bin/mcphub-fixture node --test ...)');
}
accessSync(FIXTURE, fsConstants.X_OK); // throws ENOENT/EACCES naming the path

export const TEST_TIMEOUT = 20_000;

// The SDK passes only a handful of variables to the child; sanitizer settings must survive
// so that an ASan build of the fixture behaves the same under ctest's asan preset.
export function fixtureEnv(extra = {}) {
  const env = getDefaultEnvironment();
  for (const key of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) {
    if (process.env[key] !== undefined) env[key] = process.env[key];
  }
  return { ...env, ...extra };
}

// Waits until pid no longer exists (the transport reaps its child before reporting close).
export async function assertGone(pid) {
  assert.ok(Number.isInteger(pid) && pid > 0, `bad pid ${pid}`);
  const deadline = Date.now() + 3000;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      assert.equal(err.code, 'ESRCH');
      return;
    }
    if (Date.now() > deadline) assert.fail(`fixture pid ${pid} is still alive`);
    await sleep(20);
  }
}

export function textOf(result) {
  assert.ok(Array.isArray(result.content), 'result.content is an array');
  assert.equal(result.content.length, 1);
  assert.equal(result.content[0].type, 'text');
  return result.content[0].text;
}

// Starts the fixture under an SDK client. The test's after-hook closes the client and checks
// that the child process is gone. Default sampling/elicitation handlers answer predictably.
export async function startClient(t, {
  capabilities = { sampling: {}, elicitation: {} },
  args = [],
  env = {},
  onSample = async (req) => ({
    model: 'e2e-model',
    role: 'assistant',
    content: { type: 'text', text: `reply to ${req.params.messages[0].content.text}` },
  }),
  onElicit = async () => ({ action: 'accept', content: { name: 'Ada' } }),
} = {}) {
  const transport = new StdioClientTransport({ command: FIXTURE, args, env: fixtureEnv(env), stderr: 'pipe' });
  let stderr = '';
  transport.stderr.on('data', (chunk) => { stderr += chunk; });
  const client = new Client({ name: 'mcphub-e2e', version: '0.0.0' }, { capabilities });
  const errors = [];
  client.onerror = (err) => errors.push(err);
  if (capabilities.sampling) client.setRequestHandler(CreateMessageRequestSchema, onSample);
  if (capabilities.elicitation) client.setRequestHandler(ElicitRequestSchema, onElicit);
  await client.connect(transport);
  const pid = transport.pid;
  t.after(async () => {
    await client.close();
    await assertGone(pid);
    assert.doesNotMatch(stderr, /Sanitizer|runtime error:/, 'sanitizer report on the fixture stderr');
  });
  return { client, transport, pid, errors, stderr: () => stderr };
}

// A fixture child spoken to in raw lines. next() resolves with the next stdout message.
export function startRaw(t, { args = [], env = {} } = {}) {
  const child = spawn(FIXTURE, args, { env: fixtureEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
  const queue = [];
  const waiters = [];
  let buf = '';
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, nl)); // every stdout line must be JSON
      buf = buf.slice(nl + 1);
      if (waiters.length) waiters.shift()(msg);
      else queue.push(msg);
    }
  });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const raw = {
    child,
    exited,
    stderr: () => stderr,
    send: (line) => child.stdin.write((typeof line === 'string' ? line : JSON.stringify(line)) + '\n'),
    next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiters.push(resolve))),
    // Closes stdin and expects a clean exit 0.
    finish: async () => {
      child.stdin.end();
      assert.deepEqual(await raw.exited, { code: 0, signal: null });
      await assertGone(child.pid);
      assert.doesNotMatch(stderr, /Sanitizer|runtime error:/, 'sanitizer report on the fixture stderr');
    },
  };
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return raw;
}
