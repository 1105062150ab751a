// Starts the real hub for end-to-end tests: mcphub-control on a settings file and one or
// more mcphub-edge processes, all on ephemeral loopback ports, and stops them TERM then KILL.
// Binaries come from MCPHUB_BIN_DIR (ctest sets it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const BIN_DIR = process.env.MCPHUB_BIN_DIR;
if (!BIN_DIR) throw new Error('MCPHUB_BIN_DIR is not set (ctest sets it)');
export const EVERYTHING = new URL(
  './node_modules/@modelcontextprotocol/server-everything/dist/index.js', import.meta.url).pathname;
export const MEMORY = new URL(
  './node_modules/@modelcontextprotocol/server-memory/dist/index.js', import.meta.url).pathname;

// One daemon whose stderr is collected; waitFor(regex) resolves with the first match.
function startDaemon(name, args) {
  const child = spawn(join(BIN_DIR, name), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const waiters = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    log += chunk;
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.on('exit', () => { for (const w of waiters.splice(0)) w(); });
  return {
    child,
    exited,
    log: () => log,
    async waitFor(re, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = log.match(re);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`${name}: no ${re} in its log:\n${log}`);
        }
        await Promise.race([new Promise((r) => waiters.push(r)), sleep(100)]);
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
        const r = await exited;
        clearTimeout(timer);
        return r;
      }
      return exited;
    },
  };
}

// PIDs of live processes whose parent is ppid (zombies excluded).
export function childrenOf(ppid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid && fields[0] !== 'Z') out.push(Number(entry));
    } catch { /* gone */ }
  }
  return out;
}

const ADMIN_PROTO = new URL('../../proto/mcphub/v1/admin.proto', import.meta.url).pathname;

function adminClient(addr) {
  const def = protoLoader.loadSync(ADMIN_PROTO, { keepCase: false, longs: Number, enums: String, defaults: true });
  const Admin = grpc.loadPackageDefinition(def).mcphub.v1.Admin;
  const client = new Admin(addr, grpc.credentials.createInsecure());
  const api = { close: () => client.close() };
  for (const name of Object.keys(Admin.service)) {
    const m = name[0].toLowerCase() + name.slice(1);
    api[m] = (req = {}) => new Promise((resolve, reject) =>
      client[name](req, { deadline: Date.now() + 10_000 }, (err, reply) => (err ? reject(err) : resolve(reply))));
  }
  return api;
}

// Starts control with `settings` (an object in MCPHub's format) and `edges` edges. Returns
// { url(path, edge = 0), control, edges, settingsPath, writeSettings(obj), stop() }. stop()
// checks every daemon exits 0 and that no process it started is left.
export async function startHub(settings, { edges = 1 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'mcphub-e2e-'));
  const path = join(dir, 'mcp_settings.json');
  writeFileSync(path, JSON.stringify(settings));
  const control = startDaemon('mcphub-control',
    ['--config', path, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']);
  const gateway = (await control.waitFor(/service=gateway addr=127\.0\.0\.1:(\d+)/))[1];
  const adminPort = (await control.waitFor(/service=admin addr=127\.0\.0\.1:(\d+)/))[1];
  await control.waitFor(/msg="control ready"/);
  const started = [];
  for (let i = 0; i < edges; i++) {
    const e = startDaemon('mcphub-edge', ['--listen', '127.0.0.1:0', '--control',
      `127.0.0.1:${gateway}`, '--edge-id', `e2e-edge-${i}`]);
    e.port = Number((await e.waitFor(/msg="edge listening" addr=127\.0\.0\.1:(\d+)/))[1]);
    started.push(e);
  }
  // Ready once each edge holds its stream to control.
  for (const e of started) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await fetch(`http://127.0.0.1:${e.port}/readyz`).catch(() => null);
      if (r && r.status === 200) break;
      if (Date.now() > deadline) throw new Error(`edge not ready:\n${e.log()}`);
      await sleep(50);
    }
  }
  let admin = null;
  return {
    control,
    edges: started,
    // Control's Admin service through @grpc/grpc-js and the checked-in .proto: each method
    // is an async function of its request object.
    admin() {
      admin ??= adminClient(`127.0.0.1:${adminPort}`);
      return admin;
    },
    settingsPath: path,
    // Replaces the settings file the way editors do: a new file renamed over the old one.
    writeSettings(next) {
      writeFileSync(`${path}.tmp`, JSON.stringify(next));
      renameSync(`${path}.tmp`, path);
    },
    url: (p, i = 0) => new URL(`http://127.0.0.1:${started[i].port}${p}`),
    // strict: false after a test killed a daemon on purpose (its exit status is not 0).
    async stop({ strict = true } = {}) {
      admin?.close();
      const controlChildren = childrenOf(control.child.pid);
      for (const e of started) {
        const r = await e.stop();
        if (strict) assert.equal(r.code, 0, `edge exit: ${JSON.stringify(r)}\n${e.log()}`);
      }
      const r = await control.stop();
      if (strict) assert.equal(r.code, 0, `control exit: ${JSON.stringify(r)}\n${control.log()}`);
      for (const pid of controlChildren) {
        assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `upstream ${pid} outlived control`);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
