// The official MCP conformance suite (@modelcontextprotocol/conformance, server mode)
// against the hub: control + edge in front of the C fixture, on the single-server route
// /mcp/fixture (names unprefixed, as the suite's scenarios call them). Two runs: the 0.1.x
// release's active suite, and the 0.2.0 alpha scored against the 2025-11-25 requirements.
// No expected-failures file: every scenario must pass.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';

import { BIN_DIR, startHub } from './hub.mjs';

const RUN = new URL('../conformance/run.sh', import.meta.url).pathname;

let hub;
before(async () => {
  hub = await startHub({ mcpServers: { fixture: { command: `${BIN_DIR}/mcphub-fixture` } } });
});
after(async () => { await hub.stop(); });

function runSuite(args) {
  return new Promise((resolve) => {
    const child = spawn('bash', [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => resolve({ code, out }));
  });
}

// The suite's DNS-rebinding scenario needs the URL to name the host `localhost`.
const url = () => `http://localhost:${hub.edges[0].port}/mcp/fixture`;

for (const [name, args] of [['0.1.x active suite', []], ['alpha, 2025-11-25 requirements', ['--alpha']]]) {
  test(`conformance: ${name}`, { timeout: 600_000 }, async () => {
    const { code, out } = await runSuite([...args, url()]);
    const total = out.match(/Total: (\d+) passed, (\d+) failed/);
    console.log(out.split('\n').filter((l) => /✓|✗|FAIL|Total|passed|failed/.test(l)).join('\n'));
    assert.ok(total, `no total line:\n${out}`);
    assert.equal(Number(total[2]), 0, `failures:\n${out}`);
    assert.equal(code, 0, out);
  });
}
