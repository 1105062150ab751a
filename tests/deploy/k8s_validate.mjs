// k8s_validate: renders a kustomization with `kubectl kustomize` and checks every object it
// yields against the Kubernetes API schema, strictly, plus the rules deploy/k8s promises
// (security context, resources, selectors and ports that point at something).
//
// Two views of the Kubernetes OpenAPI schema, both generated from it and pinned in
// package-lock.json, do the schema part:
//   - kubernetes-models (Kubernetes 1.34 API): its JSON-schema validators check types,
//     required fields, enums and formats, but accept unknown fields;
//   - @kubernetes/client-node (Kubernetes 1.36 API): its models' attribute tables list every
//     field of every type, which the walk below uses to reject unknown fields, as the API
//     server does with strict field validation (kubectl's default since 1.27).
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { parseAllDocuments } from "yaml";
import * as clientModels from "@kubernetes/client-node/dist/gen/models/ObjectSerializer.js";

// Renders dir with kubectl; returns the parsed objects. Throws with kubectl's message.
export function render(kubectl, dir) {
  const r = spawnSync(kubectl, ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`${kubectl} kustomize ${dir}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${kubectl} kustomize ${dir} failed:\n${r.stderr}`);
  return parseObjects(r.stdout, dir);
}

// Parses a multi-document YAML text; throws on a YAML error.
export function parseObjects(text, where = "input") {
  const objects = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`${where}: ${doc.errors[0].message}`);
    const o = doc.toJS();
    if (o !== null && o !== undefined) objects.push(o);
  }
  return objects;
}

const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function splitApiVersion(apiVersion) {
  const i = apiVersion.lastIndexOf("/");
  return i < 0 ? { group: "", version: apiVersion } : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
}

// The client-node model of a top-level kind: "V1Deployment", or with the group's first word
// when two groups share a kind ("CoreV1Event", "EventsV1Event").
function clientModelName(apiVersion, kind) {
  const { group, version } = splitApiVersion(apiVersion);
  const prefixed = capitalize(group === "" ? "core" : group.split(".")[0]) + capitalize(version) + kind;
  for (const name of [prefixed, capitalize(version) + kind]) {
    const m = clientModels[name];
    if (m && typeof m.getAttributeTypeMap === "function") {
      const attrs = m.getAttributeTypeMap().map((a) => a.baseName);
      if (attrs.includes("apiVersion") && attrs.includes("kind")) return name;
    }
  }
  return null;
}

// Walks value as the client-node type `type`; pushes an error for every field the type does
// not have and for objects or arrays where the other is expected. Scalars are typed by the
// JSON-schema pass, which knows quantities and int-or-string apart from plain strings.
function walk(value, type, path, errors) {
  if (value === null || value === undefined || type === "any") return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (!Array.isArray(value)) return errors.push(`${path}: must be a list`);
    value.forEach((v, i) => walk(v, m[1], `${path}.${i}`, errors));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (typeof value !== "object" || Array.isArray(value)) return errors.push(`${path}: must be a map`);
    for (const [k, v] of Object.entries(value)) walk(v, m[1], `${path}.${k}`, errors);
    return;
  }
  if (["string", "number", "boolean", "Date", "IntOrString"].includes(type)) {
    if (typeof value === "object") errors.push(`${path}: must be a ${type === "IntOrString" ? "string or integer" : type}, not an object or list`);
    return;
  }
  const model = clientModels[type];
  if (!model || typeof model.getAttributeTypeMap !== "function") return errors.push(`${path}: the validator does not know type ${type}`);
  if (typeof value !== "object" || Array.isArray(value)) return errors.push(`${path}: must be an object (${type})`);
  const attrs = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    const t = attrs.get(k);
    if (t === undefined) errors.push(`${path}.${k}: unknown field (not in ${type})`);
    else walk(v, t, `${path}.${k}`, errors);
  }
}

const modelModules = new Map();

// The kubernetes-models class of apiVersion/kind, or null.
async function schemaModel(apiVersion, kind) {
  const { group, version } = splitApiVersion(apiVersion);
  const spec = `kubernetes-models/${group === "" ? version : `${group}/${version}`}`;
  if (!modelModules.has(spec)) modelModules.set(spec, await import(spec).catch(() => null));
  const mod = modelModules.get(spec);
  return (mod && typeof mod[kind] === "function") ? mod[kind] : null;
}

// Schema errors of one object, as "Kind/name: message" strings (empty when it is valid).
export async function schemaErrors(obj) {
  const id = `${obj?.kind ?? "?"}/${obj?.metadata?.name ?? "?"}`;
  if (!obj || typeof obj !== "object" || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string")
    return [`${id}: not a Kubernetes object (apiVersion and kind are required)`];
  const Model = await schemaModel(obj.apiVersion, obj.kind);
  const clientName = clientModelName(obj.apiVersion, obj.kind);
  if (!Model || !clientName) return [`${id}: ${obj.apiVersion} ${obj.kind} is not a kind of the Kubernetes API`];
  const errors = [];
  try {
    new Model(structuredClone(obj)).validate();
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    for (const err of e.errors) errors.push(`${err.instancePath.slice(1).replaceAll("/", ".") || "(object)"}: ${err.message}`);
  }
  walk(obj, clientName, "", errors);
  return errors.map((e) => `${id}: ${e.replace(/^\./, "")}`);
}

const podSpecOf = (o) => (o.kind === "Deployment" ? o.spec?.template?.spec : null);
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v);

// Checks the rules deploy/k8s keeps beyond the schema. externalSecrets: Secret names that
// are created outside the manifests. Returns "Kind/name: message" strings.
export function ruleErrors(objects, { externalSecrets = [] } = {}) {
  const errors = [];
  const byKind = (k) => objects.filter((o) => o.kind === k);
  const deployments = byKind("Deployment");
  const say = (o, msg) => errors.push(`${o.kind}/${o.metadata?.name}: ${msg}`);
  const podsMatching = (sel) => deployments.filter((d) => matches(sel, d.spec?.template?.metadata?.labels));
  const portNames = (d) => new Set(podSpecOf(d).containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)));

  for (const d of deployments) {
    const pod = podSpecOf(d);
    if (!pod) continue;
    if (!matches(d.spec.selector?.matchLabels, d.spec.template?.metadata?.labels))
      say(d, "spec.selector does not match the pod template's labels");
    if (pod.automountServiceAccountToken !== false) say(d, "automountServiceAccountToken must be false");
    const psc = pod.securityContext ?? {};
    if (psc.runAsNonRoot !== true) say(d, "securityContext.runAsNonRoot must be true");
    if (psc.seccompProfile?.type !== "RuntimeDefault") say(d, "securityContext.seccompProfile.type must be RuntimeDefault");
    for (const c of pod.containers ?? []) {
      const sc = c.securityContext ?? {};
      if (sc.readOnlyRootFilesystem !== true) say(d, `container ${c.name}: readOnlyRootFilesystem must be true`);
      if (sc.allowPrivilegeEscalation !== false) say(d, `container ${c.name}: allowPrivilegeEscalation must be false`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) say(d, `container ${c.name}: capabilities.drop must hold ALL`);
      for (const kind of ["requests", "limits"])
        for (const r of ["cpu", "memory"])
          if (c.resources?.[kind]?.[r] === undefined) say(d, `container ${c.name}: resources.${kind}.${r} is missing`);
      const names = new Set((c.ports ?? []).map((p) => p.name));
      const numbers = new Set((c.ports ?? []).map((p) => p.containerPort));
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
        const p = c[probe];
        if (!p) continue;
        const port = p.httpGet?.port ?? p.tcpSocket?.port ?? p.grpc?.port;
        if (port !== undefined && !(typeof port === "string" ? names.has(port) : numbers.has(port)))
          say(d, `container ${c.name}: ${probe} port ${port} is not a port of the container`);
      }
    }
    const mounted = new Set((pod.containers ?? []).flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name)));
    for (const v of pod.volumes ?? []) {
      if (!mounted.has(v.name)) say(d, `volume ${v.name} is mounted by no container`);
      if (v.configMap && !byKind("ConfigMap").some((m) => m.metadata.name === v.configMap.name))
        say(d, `volume ${v.name}: ConfigMap ${v.configMap.name} is not in the manifests`);
      if (v.secret && !externalSecrets.includes(v.secret.secretName) &&
          !byKind("Secret").some((s) => s.metadata.name === v.secret.secretName))
        say(d, `volume ${v.name}: Secret ${v.secret.secretName} is not in the manifests`);
    }
  }
  for (const s of byKind("Service")) {
    const targets = podsMatching(s.spec?.selector);
    if (!s.spec?.selector || targets.length === 0) { say(s, "its selector matches no Deployment's pods"); continue; }
    for (const p of s.spec.ports ?? [])
      if (typeof p.targetPort === "string" && !targets.every((d) => portNames(d).has(p.targetPort)))
        say(s, `targetPort ${p.targetPort} is not a named port of the selected pods`);
  }
  for (const pdb of byKind("PodDisruptionBudget"))
    if (podsMatching(pdb.spec?.selector?.matchLabels).length === 0) say(pdb, "its selector matches no Deployment's pods");
  for (const hpa of byKind("HorizontalPodAutoscaler")) {
    const ref = hpa.spec?.scaleTargetRef ?? {};
    if (!objects.some((o) => o.kind === ref.kind && o.metadata?.name === ref.name && o.apiVersion === ref.apiVersion))
      say(hpa, `scaleTargetRef ${ref.kind}/${ref.name} is not in the manifests`);
  }
  for (const np of byKind("NetworkPolicy")) {
    const targets = podsMatching(np.spec?.podSelector?.matchLabels);
    if (targets.length === 0) { say(np, "its podSelector matches no Deployment's pods"); continue; }
    for (const rule of np.spec.ingress ?? []) {
      for (const p of rule.ports ?? [])
        if (typeof p.port === "string" && !targets.every((d) => portNames(d).has(p.port)))
          say(np, `port ${p.port} is not a named port of the selected pods`);
      for (const peer of rule.from ?? [])
        if (peer.podSelector && !peer.namespaceSelector && peer.podSelector.matchLabels?.["app.kubernetes.io/name"] &&
            podsMatching(peer.podSelector.matchLabels).length === 0)
          say(np, "a podSelector of its ingress matches no Deployment's pods");
    }
  }
  return errors;
}

// Every schema error of a rendered kustomization or, when there is none, every rule error.
// The rules read the objects' shapes, so they run only once the schema check passed.
export async function allErrors(objects, options) {
  const errors = [];
  for (const o of objects) errors.push(...(await schemaErrors(o)));
  return errors.length ? errors : ruleErrors(objects, options);
}

// By hand: node tests/deploy/k8s_validate.mjs DIR... renders and checks each kustomization,
// prints what is wrong, and exits 1 if anything is.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let bad = 0;
  for (const dir of process.argv.slice(2)) {
    try {
      const objects = render(process.env.KUBECTL ?? "kubectl", dir);
      const errors = await allErrors(objects, { externalSecrets: ["mcphub-admin-token"] });
      for (const e of errors) console.log(`${dir}: ${e}`);
      if (errors.length) bad++;
      else console.log(`${dir}: ${objects.length} objects, all valid`);
    } catch (e) {
      console.log(e.message);
      bad++;
    }
  }
  process.exit(bad ? 1 : 0);
}
