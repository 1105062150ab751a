// The official MCP conformance suite (@modelcontextprotocol/conformance, server mode)
// against the hub: control + edge in front of the C fixture, on the single-server route
// /mcp/fixture (names unprefixed, as the suite's scenarios call them). Three runs: the 0.1.x
// release's active suite, and the 0.2.0 alpha scored against the 2025-11-25 requirements and
// against the stateless 2026-07-28 ones (the fixture speaks the session era; the hub serves
// the 2026 wire and bridges). No expected-failures file: every scored scenario must pass.
// The 2026 run also runs scenarios it does not score (the tasks extension, pending ones):
// they count in its Total line but not in its exit status, which is what decides there.
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

const RUNS = [
  ['0.1.x active suite', [], null],
  ['alpha, 2025-11-25 requirements', ['--alpha'], null],
  ['alpha, 2026-07-28 requirements', ['--alpha', '--requirements', '2026-07-28'], 'scored'],
];
for (const [name, pre, scoring] of RUNS) {
  test(`conformance: ${name}`, { timeout: 600_000 }, async () => {
    const [first, ...rest] = pre;
    const { code, out } = await runSuite(first ? [first, url(), ...rest] : [url()]);
    const total = out.match(/Total: (\d+) passed, (\d+) failed/);
    console.log(out.split('\n').filter((l) => /✓|✗|FAIL|Total|passed|failed/.test(l)).join('\n'));
    assert.ok(total, `no total line:\n${out}`);
    if (scoring === 'scored') {
      // Every scenario line above "Not scored" must be a pass, whatever the unscored ones do.
      const scored = out.split('Not scored')[0].split('\n').filter((l) => /^[✓✗] /.test(l));
      const unscored = new Set([...out.matchAll(/^\s+[✓✗] (\S+) \((?:extension|pending)\)/gm)].map((m) => m[1]));
      const failed = scored.filter((l) => l.startsWith('✗') && !unscored.has(l.slice(2).split(':')[0]));
      assert.ok(scored.length >= 37, `expected the 37 scored scenarios:\n${out}`);
      assert.deepEqual(failed, [], `failures:\n${out}`);
    } else {
      assert.equal(Number(total[2]), 0, `failures:\n${out}`);
    }
    assert.equal(code, 0, out);
  });
}
