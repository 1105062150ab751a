// Supervision of upstream instances, observed as a client and through /proc: startOnDemand
// servers start at first use and stop after idleTimeoutMs (never during a call), a server
// that stops answering keep-alive pings is replaced, and hub.maxInstances is a hard limit
// that turns into a clear JSON-RPC error.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { BIN_DIR, childrenOf, startHub } from './hub.mjs';

const FIXTURE = `${BIN_DIR}/mcphub-fixture`;

// Live children of control started as the fixture with --name tag.
function pidsOf(hub, tag) {
  return childrenOf(hub.control.child.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(tag);
    } catch { return false; }
  });
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function until(what, fn, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function connect(hub) {
  const client = new Client({ name: 'e2e-supervision', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(hub.url('/mcp')));
  return client;
}

describe('supervision', { timeout: 120_000 }, () => {
  test('startOnDemand: started by the first use, stopped when idle, never during a call', async () => {
    const hub = await startHub({
      mcpServers: { od: { command: FIXTURE, args: ['--name', 'od'], startOnDemand: true, idleTimeoutMs: 800 } },
    });
    try {
      await sleep(300);
      assert.deepEqual(pidsOf(hub, 'od'), [], 'an on-demand server does not start with control');
      const client = await connect(hub);
      // Listing needs its tools: that is its first use.
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('od-echo'), names.join(' '));
      const first = pidsOf(hub, 'od');
      assert.equal(first.length, 1);
      await until('idle stop', () => !alive(first[0]));
      // Its tools stay listed while it is stopped, and a call starts it again.
      assert.ok((await client.listTools()).tools.some((t) => t.name === 'od-echo'));
      assert.deepEqual(pidsOf(hub, 'od'), [], 'listing known tools does not start it');
      const r = await client.callTool({ name: 'od-echo', arguments: { message: 'again' } });
      assert.equal(r.content[0].text, 'again');
      const second = pidsOf(hub, 'od');
      assert.equal(second.length, 1);
      assert.notEqual(second[0], first[0]);
      // A call longer than the idle timeout keeps it running to the end.
      const slow = await client.callTool({ name: 'od-slow', arguments: { steps: 10, delayMs: 200 } });
      assert.equal(slow.content[0].text, 'done after 10 steps');
      assert.ok(alive(second[0]), 'stopped while a call was running');
      await until('idle stop after the call', () => !alive(second[0]));
      await client.close();
    } finally {
      await hub.stop();
    }
  });

  test('a server that stops answering keep-alive pings is replaced', async () => {
    const hub = await startHub({
      mcpServers: { ka: { command: FIXTURE, args: ['--name', 'ka'], keepAliveInterval: 300 } },
      hub: { killGracePeriod: 300 },
    });
    try {
      const client = await connect(hub);
      const [pid] = await until('ka running', () => pidsOf(hub, 'ka').length === 1 && pidsOf(hub, 'ka'));
      process.kill(pid, 'SIGSTOP'); // alive, but silent
      const t0 = Date.now();
      await hub.control.waitFor(/msg="upstream missed a keep-alive ping" server=ka/, 10_000);
      const [next] = await until('a new ka process', () => {
        const p = pidsOf(hub, 'ka');
        return p.length === 1 && p[0] !== pid && p;
      });
      console.log(`# stopped server replaced after ${Date.now() - t0} ms`);
      await until('the stopped process is reaped', () => !alive(pid));
      const r = await client.callTool({ name: 'ka-echo', arguments: { message: 'back' } });
      assert.equal(r.content[0].text, 'back');
      assert.ok(alive(next));
      await client.close();
    } finally {
      await hub.stop();
    }
  });

  test('hub.maxInstances: past the limit a clear error, never another process', async () => {
    const servers = {
      a: { command: FIXTURE, args: ['--name', 'a'] },
      b: { command: FIXTURE, args: ['--name', 'b'] },
    };
    const hub = await startHub({ mcpServers: servers, hub: { maxInstances: 2 } });
    try {
      const client = await connect(hub);
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('a-echo') && names.includes('b-echo'));
      // The limit drops to one while both run: nothing is stopped for it, but b's
      // replacement after a crash must wait.
      hub.writeSettings({ mcpServers: servers, hub: { maxInstances: 1 } });
      await hub.control.waitFor(/msg="configuration reloaded"/);
      const [bpid] = pidsOf(hub, 'b');
      process.kill(bpid, 'SIGKILL');
      await hub.control.waitFor(/msg="upstream not started: instance limit reached" server=b maxInstances=1/, 10_000);
      await assert.rejects(client.callTool({ name: 'b-echo', arguments: { message: 'x' } }),
        /instance limit reached \(hub\.maxInstances = 1\)/);
      assert.deepEqual(pidsOf(hub, 'b'), []);
      assert.equal(pidsOf(hub, 'a').length, 1);
      const r = await client.callTool({ name: 'a-echo', arguments: { message: 'a still works' } });
      assert.equal(r.content[0].text, 'a still works');
      // Raising the limit again lets b start.
      hub.writeSettings({ mcpServers: servers, hub: { maxInstances: 2 } });
      await until('b started', async () => {
        try {
          const res = await client.callTool({ name: 'b-echo', arguments: { message: 'b' } });
          return res.content[0].text === 'b';
        } catch { return false; }
      });
      await client.close();
    } finally {
      await hub.stop();
    }
  });
});
