// Remote upstreams: @modelcontextprotocol/server-everything running as a Streamable HTTP
// server and as a legacy HTTP+SSE server (its own `streamableHttp` and `sse` modes), behind
// the hub, driven by the official SDK client. Then the remote server goes away (its calls
// fail promptly) and comes back on the same port (the hub reconnects by itself).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema } from '@modelcontextprotocol/sdk/types.js';

import { EVERYTHING, startHub } from './hub.mjs';

const LOOPBACK = new URL('./loopback.mjs', import.meta.url).pathname;

// A free port for a server that goes away and comes back on it: below the kernel's
// ephemeral range, so that no port-0 listener or outgoing connection of another test running
// beside this one can take it while the server is down.
async function restartablePort() {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
  const floor = Math.max(1024, low - 10000);
  for (let i = 0; i < 100; i++) {
    const port = randomInt(floor, low);
    const srv = net.createServer();
    const ok = await new Promise((r) => {
      srv.once('error', () => r(false));
      srv.listen(port, '127.0.0.1', () => r(true));
    });
    if (ok) {
      await new Promise((r) => srv.close(r));
      return port;
    }
  }
  throw new Error(`no free port in ${floor}..${low - 1}`);
}

// server-everything in `mode` on 127.0.0.1:port; resolves once it accepts connections.
async function startEverything(mode, port) {
  const child = spawn(process.execPath, ['--import', LOOPBACK, EVERYTHING, mode], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((r) => child.on('exit', r));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`everything ${mode} did not start:\n${log}`);
    await sleep(50);
  }
  return {
    child,
    log: () => log,
    async kill(sig = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      await exited;
    },
  };
}

function textOf(result) {
  assert.equal(result.content[0].type, 'text');
  return result.content[0].text;
}

async function connect(hub) {
  const client = new Client({ name: 'e2e-remote', version: '1.0.0' }, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
    role: 'assistant', model: 'e2e-model',
    content: { type: 'text', text: `sampled:${req.params.messages[0].content.text}` },
  }));
  await client.connect(new StreamableHTTPClientTransport(hub.url('/mcp')));
  return client;
}

describe('remote upstreams', { timeout: 120_000 }, () => {
  let http, sse, hub, client, httpPort;
  before(async () => {
    httpPort = await restartablePort();
    const ssePort = await restartablePort();
    http = await startEverything('streamableHttp', httpPort);
    sse = await startEverything('sse', ssePort);
    hub = await startHub({
      mcpServers: {
        remote: { type: 'streamable-http', url: `http://127.0.0.1:${httpPort}/mcp` },
        // No type with a url: MCPHub's rule makes it legacy SSE.
        legacy: { url: `http://127.0.0.1:${ssePort}/sse`, keepAliveInterval: 1000 },
      },
      hub: { killGracePeriod: 500 },
    });
    client = await connect(hub);
  });
  after(async () => {
    await client?.close();
    await hub?.stop();
    await http?.kill();
    await sse?.kill();
  });

  test('tools of both remote servers are listed and called', async () => {
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const n of ['remote-echo', 'remote-get-sum', 'legacy-echo', 'legacy-get-sum']) {
      assert.ok(names.includes(n), `${n} missing from ${names.join(' ')}`);
    }
    assert.match(textOf(await client.callTool({ name: 'remote-echo', arguments: { message: 'over http' } })), /over http/);
    assert.match(textOf(await client.callTool({ name: 'legacy-echo', arguments: { message: 'over sse' } })), /over sse/);
    assert.match(textOf(await client.callTool({ name: 'remote-get-sum', arguments: { a: 2, b: 40 } })), /42/);
  });

  test('progress and sampling cross both remote transports', async () => {
    for (const server of ['remote', 'legacy']) {
      const seen = [];
      const r = await client.callTool(
        { name: `${server}-trigger-long-running-operation`, arguments: { duration: 0.3, steps: 3 } },
        undefined, { onprogress: (p) => seen.push(p.progress) });
      assert.match(textOf(r), /completed/i);
      assert.deepEqual(seen, [1, 2, 3], `${server} progress`);
      const s = await client.callTool({ name: `${server}-trigger-sampling-request`, arguments: { prompt: 'hi', maxTokens: 10 } });
      assert.match(textOf(s), /sampled:/, `${server} sampling`);
    }
  });

  test('a remote server that goes away fails calls promptly, and is reconnected when back', async () => {
    await http.kill('SIGKILL');
    const t0 = Date.now();
    await assert.rejects(client.callTool({ name: 'remote-echo', arguments: { message: 'x' } }), /MCP error -32/);
    const failMs = Date.now() - t0;
    console.log(`# call to a vanished remote server failed after ${failMs} ms`);
    assert.ok(failMs < 5000, `took ${failMs} ms`);
    // The other remote server is not affected.
    assert.match(textOf(await client.callTool({ name: 'legacy-echo', arguments: { message: 'still' } })), /still/);
    http = await startEverything('streamableHttp', httpPort);
    const t1 = Date.now();
    const deadline = Date.now() + 40_000;
    for (;;) {
      try {
        const r = await client.callTool({ name: 'remote-echo', arguments: { message: 'back' } });
        assert.match(textOf(r), /back/);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
    console.log(`# remote server usable again ${Date.now() - t1} ms after it came back`);
  });
});
