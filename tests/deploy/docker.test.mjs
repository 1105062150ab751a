// deploy/docker: what can be checked of the Dockerfile without a Docker engine. The runtime
// stage's packages must provide every shared library the built daemons link (so a new
// dependency cannot be forgotten there), it builds and copies every binary we ship,
// and its user is the one the Kubernetes manifests run as.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = process.env.MCPHUB_SOURCE_DIR ?? join(here, "..", "..");
const binDir = process.env.MCPHUB_BIN_DIR ?? join(source, "build", "dev", "bin");
const dockerfile = readFileSync(join(source, "deploy", "docker", "Dockerfile"), "utf8");
const shipped = ["mcphub-control", "mcphub-edge", "mcphubctl", "mcphub-fixture"];

// The Dockerfile's instructions, continuation lines joined and comments dropped, by stage.
function stages() {
  const lines = dockerfile.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n").replace(/\\\n/g, " ").split("\n");
  const out = [];
  for (const l of lines) {
    if (/^FROM\s/i.test(l)) out.push([]);
    if (out.length && l.trim()) out.at(-1).push(l.trim());
  }
  return out;
}

// The packages an `apt-get install` of the given stage names.
function aptPackages(stage) {
  const pkgs = [];
  for (const l of stage)
    for (const m of l.matchAll(/apt-get install((?:\s+[^&\s]+)+)/g))
      pkgs.push(...m[1].trim().split(/\s+/).filter((w) => !w.startsWith("-")));
  return pkgs;
}

const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
};

// The Debian package owning each soname's file, as the dynamic loader finds it: one
// dpkg-query for all (it scans every package's file list, so calls are slow). Both the
// loader's path and its resolved form are asked for, since dpkg records /lib paths as
// packaged while /lib may be a symlink to /usr/lib.
function packagesOf(sonames) {
  const cache = run("/sbin/ldconfig", ["-p"]).split("\n").map((l) => l.trim());
  const paths = new Map();
  for (const so of sonames) {
    const line = cache.find((l) => l.startsWith(so + " ") && l.includes("x86-64")) ?? cache.find((l) => l.startsWith(so + " "));
    assert.ok(line, `${so}: not known to ldconfig`);
    const path = line.split("=>")[1].trim();
    paths.set(so, [path, realpathSync(path)]);
  }
  const r = spawnSync("dpkg-query", ["-S", ...new Set([...paths.values()].flat())], { encoding: "utf8" });
  const owner = new Map();
  for (const line of r.stdout.split("\n")) {
    const m = /^([^:,]+)(?::[^:]+)?: (\/.+)$/.exec(line);
    if (m) owner.set(m[2], m[1]);
  }
  const out = new Map();
  for (const [so, [path, real]] of paths) {
    const pkg = owner.get(path) ?? owner.get(real);
    assert.ok(pkg, `${so} (${real}): owned by no Debian package`);
    out.set(so, pkg);
  }
  return out;
}

// pkgs and everything they depend on, as installed here (dpkg's database: no apt lists needed).
function dependencyClosure(pkgs) {
  const depends = new Map();
  for (const line of run("dpkg-query", ["-W", "-f=${Package}\t${Depends},${Pre-Depends}\n"]).split("\n")) {
    const [name, deps = ""] = line.split("\t");
    depends.set(name, deps.split(/[,|]/).map((d) => d.trim().split(/[\s:(]/)[0]).filter(Boolean));
  }
  const seen = new Set();
  const todo = [...pkgs];
  while (todo.length) {
    const p = todo.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    todo.push(...(depends.get(p) ?? []));
  }
  return seen;
}

test("the runtime stage installs a package for every library the daemons link", () => {
  const all = stages();
  const runtime = aptPackages(all.at(-1));
  const provided = dependencyClosure(runtime);
  // Essential in every Debian image, debian:12-slim included.
  const base = new Set(["libc6", "libgcc-s1", "zlib1g"]);
  const needs = [];
  for (const bin of shipped) {
    const needed = [...run("readelf", ["-d", join(binDir, bin)]).matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1]);
    assert.ok(needed.length > 0, `${bin}: no NEEDED entries`);
    // The image builds the release preset; the asan, tsan and fuzz presets add sanitizer
    // runtimes and libatomic, which the image never links.
    const sanitized = needed.some((so) => /^lib(asan|ubsan|tsan)\.so/.test(so));
    for (const so of needed)
      if (!(sanitized && /^lib(asan|ubsan|tsan|lsan|atomic)\.so/.test(so))) needs.push([bin, so]);
  }
  const owners = packagesOf(new Set(needs.map(([, so]) => so)));
  const missing = needs.filter(([, so]) => !base.has(owners.get(so)) && !provided.has(owners.get(so)))
    .map(([bin, so]) => `${bin} needs ${so} from ${owners.get(so)}`);
  assert.deepEqual(missing, [], `add these packages to the runtime stage of deploy/docker/Dockerfile`);
  console.log(`runtime packages: ${runtime.join(" ")}`);
});

test("the image builds and ships every binary, side by side", () => {
  const all = stages();
  const build = all[0].join("\n");
  for (const b of shipped) assert.match(build, new RegExp(`--target[^\\n]*\\b${b}\\b`), `${b} is not built`);
  assert.match(build, new RegExp(`for b in ${shipped.join(" ")};`));
  assert.ok(all.at(-1).includes("COPY --from=build /out/ /usr/local/bin/"));
  assert.ok(all.at(-1).includes('CMD ["/usr/local/bin/mcphub-control"]'));
});

test("the image's user is the one the manifests run as, and is not root", () => {
  const runtime = stages().at(-1);
  const user = runtime.find((l) => /^USER\s/.test(l));
  assert.equal(user, "USER 10001:10001");
  for (const f of ["control-deployment.yaml", "edge-deployment.yaml"]) {
    const text = readFileSync(join(source, "deploy", "k8s", "base", f), "utf8");
    assert.match(text, /runAsUser: 10001\n/, f);
    assert.match(text, /runAsGroup: 10001\n/, f);
  }
});

test(".dockerignore keeps build output and node_modules out of the context", () => {
  const ignore = readFileSync(join(source, ".dockerignore"), "utf8").split("\n").map((l) => l.trim());
  for (const p of [".git", "build", "**/node_modules"]) assert.ok(ignore.includes(p), p);
});
