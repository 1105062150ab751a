// Live configuration with the official SDK client: the settings file is edited while a
// client holds its GET stream; control applies the change without a restart, the client
// hears list_changed and sees the new tools, servers nobody touched keep their process, and
// an invalid file changes nothing.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

import { BIN_DIR, childrenOf, startHub } from './hub.mjs';

const FIXTURE = `${BIN_DIR}/mcphub-fixture`;
const base = { mcpServers: { alpha: { command: FIXTURE, args: ['--name', 'alpha'] } } };

// Resolves with the next list_changed the client hears; rejects after ms.
function nextListChanged(client, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no tools/list_changed')), ms);
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function toolNames(client) {
  return (await client.listTools()).tools.map((t) => t.name).sort();
}

// The pids of control's children whose command line names the fixture with --name tag.
function fixturePids(hub, tag) {
  return childrenOf(hub.control.child.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(tag);
    } catch { return false; }
  });
}

async function until(what, fn, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('live configuration', { timeout: 90_000 }, () => {
  let hub;
  let client;
  before(async () => {
    hub = await startHub(base);
    client = new Client({ name: 'e2e-live', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(hub.url('/mcp')));
    // The SDK opens its GET stream after initialize; changes are announced on it.
    await hub.control.waitFor(/msg="session stream attached"/);
  });
  after(async () => {
    await client?.close();
    await hub.stop();
  });

  test('an added server: list_changed on the GET stream, then its tools', async () => {
    assert.deepEqual((await toolNames(client)).filter((n) => !n.startsWith('alpha-')), []);
    const alphaPid = (await until('alpha running', () => fixturePids(hub, 'alpha')[0]));
    const heard = nextListChanged(client);
    hub.writeSettings({ mcpServers: { ...base.mcpServers, beta: { command: FIXTURE, args: ['--name', 'beta'] } } });
    await heard;
    const names = await until('beta tools', async () => {
      const n = await toolNames(client);
      return n.includes('beta-echo') ? n : null;
    });
    assert.ok(names.includes('alpha-echo'));
    const r = await client.callTool({ name: 'beta-echo', arguments: { message: 'new' } });
    assert.equal(r.content[0].text, 'new');
    // alpha was not touched: same process.
    assert.deepEqual(fixturePids(hub, 'alpha'), [alphaPid]);
    await hub.control.waitFor(/msg="configuration reloaded"/);
  });

  test('an invalid file is rejected and changes nothing', async () => {
    const before = await toolNames(client);
    writeFileSync(hub.settingsPath, '{"mcpServers": {"broken": {"command": 5}}}');
    await hub.control.waitFor(/msg="configuration rejected: the last good one stays in force" error="[^"]*mcpServers\.broken\.command/);
    assert.deepEqual(await toolNames(client), before);
    const r = await client.callTool({ name: 'alpha-echo', arguments: { message: 'still' } });
    assert.equal(r.content[0].text, 'still');
  });

  test('a removed server: list_changed, its tools go and its process stops', async () => {
    const betaPid = (await until('beta running', () => fixturePids(hub, 'beta')[0]));
    const heard = nextListChanged(client);
    hub.writeSettings(base);
    await heard;
    assert.ok(!(await toolNames(client)).some((n) => n.startsWith('beta-')));
    await until('beta process exit', () => {
      try { process.kill(betaPid, 0); return false; } catch { return true; }
    });
    await assert.rejects(client.callTool({ name: 'beta-echo', arguments: { message: 'x' } }), /-32602|Unknown tool/);
  });

  test('a changed server restarts; an override change only renames', async () => {
    const alphaPid = fixturePids(hub, 'alpha')[0];
    const heard = nextListChanged(client);
    hub.writeSettings({ mcpServers: { alpha: { ...base.mcpServers.alpha, tools: { echo: { enabled: false } } } } });
    await heard;
    assert.ok(!(await toolNames(client)).includes('alpha-echo'));
    assert.deepEqual(fixturePids(hub, 'alpha'), [alphaPid], 'an override does not restart the server');
    hub.writeSettings({ mcpServers: { alpha: { command: FIXTURE, args: ['--name', 'alpha', '--name', 'alpha'] } } });
    const newPid = await until('alpha restarted', () => {
      const p = fixturePids(hub, 'alpha');
      return p.length === 1 && p[0] !== alphaPid ? p[0] : null;
    });
    assert.notEqual(newPid, alphaPid);
    await until('alpha-echo back', async () => (await toolNames(client)).includes('alpha-echo'));
  });
});
