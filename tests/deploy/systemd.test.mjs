// deploy/systemd: the units pass `systemd-analyze verify` without a single complaint (it only
// warns about unknown or misspelled settings, so any output fails the test). The binaries
// they start are the ones just built; skipped where systemd-analyze is not installed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = process.env.MCPHUB_SOURCE_DIR ?? join(here, "..", "..");
const binDir = process.env.MCPHUB_BIN_DIR ?? join(source, "build", "dev", "bin");
const units = ["mcphub-control.service", "mcphub-edge.service"];
const analyze = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });

test("systemd-analyze verify accepts the units", { skip: analyze.error ? "systemd-analyze is not installed" : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), "mcphub-units-"));
  try {
    for (const u of units) {
      const text = readFileSync(join(source, "deploy", "systemd", u), "utf8");
      assert.match(text, /^ExecStart=\/usr\/local\/bin\/mcphub-/m, u);
      writeFileSync(join(dir, u), text.replaceAll("/usr/local/bin/", binDir + "/"));
    }
    for (const b of ["mcphub-control", "mcphub-edge"]) assert.ok(existsSync(join(binDir, b)), `${b} not built in ${binDir}`);
    const r = spawnSync("systemd-analyze", ["verify", ...units], { cwd: dir, encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((r.stdout + r.stderr).trim(), "", "systemd-analyze verify complained");
    console.log(analyze.stdout.split("\n")[0]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the units keep the promises of docs/deploy.md", () => {
  const control = readFileSync(join(source, "deploy", "systemd", "mcphub-control.service"), "utf8");
  const edge = readFileSync(join(source, "deploy", "systemd", "mcphub-edge.service"), "utf8");
  for (const [name, text] of [["control", control], ["edge", edge]]) {
    for (const line of ["Type=simple", "User=mcphub", "KillMode=mixed", "Restart=on-failure", "NoNewPrivileges=yes",
                        "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet="])
      assert.match(text, new RegExp(`^${line}$`, "m"), `${name}: ${line}`);
  }
  assert.match(control, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  // TimeoutStopSec must outlast the drain: MCPHUB_DRAIN_MS plus the upstreams' kill grace.
  const drain = Number(/^Environment=MCPHUB_DRAIN_MS=(\d+)$/m.exec(control)[1]);
  const stop = Number(/^TimeoutStopSec=(\d+)$/m.exec(control)[1]);
  assert.ok(stop * 1000 >= drain + 2000 + 5000, `TimeoutStopSec=${stop} is too short for a ${drain} ms drain`);
  assert.match(edge, /^After=.*\bmcphub-control\.service\b/m);
  assert.match(edge, /^Wants=.*\bmcphub-control\.service\b/m);
});
