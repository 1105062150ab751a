// deploy/k8s: every kustomization (base and overlays) renders with `kubectl kustomize`, and
// every object it yields passes the strict schema check and deploy/k8s's own rules; then
// the check itself is shown to fail on broken manifests, so a green run means something.
// KUBECTL names the kubectl to use (default: the one on PATH; Debian's kubernetes-client,
// kubectl 1.20, is enough).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { render, allErrors, schemaErrors } from "./k8s_validate.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const source = process.env.MCPHUB_SOURCE_DIR ?? join(here, "..", "..");
const k8s = join(source, "deploy", "k8s");
const kubectl = process.env.KUBECTL ?? "kubectl";
// Created by the operator, never committed (docs/deploy.md).
const options = { externalSecrets: ["mcphub-admin-token"] };

const kustomizations = [join(k8s, "base")].concat(
  readdirSync(join(k8s, "overlays")).map((d) => join(k8s, "overlays", d))
    .filter((d) => existsSync(join(d, "kustomization.yaml"))));

test("kubectl is there", () => {
  const r = spawnSync(kubectl, ["version", "--client"], { encoding: "utf8" });
  assert.equal(r.error, undefined,
    `${kubectl}: ${r.error?.message} (install Debian's kubernetes-client: deploy/install-deps.sh --test)`);
  console.log(r.stdout.trim().split("\n").join("; "));
});

for (const dir of kustomizations) {
  test(`${dir.slice(source.length + 1)} renders and validates`, async () => {
    const objects = render(kubectl, dir);
    assert.ok(objects.length > 0, "rendered nothing");
    assert.deepEqual(await allErrors(objects, options), []);
    console.log(objects.map((o) => `${o.kind}/${o.metadata.name}`).join(" "));
  });
}

test("the base has what docs/deploy.md describes", () => {
  const objects = render(kubectl, join(k8s, "base"));
  const kinds = objects.map((o) => `${o.apiVersion} ${o.kind}/${o.metadata.name}`).sort();
  assert.deepEqual(kinds, [
    "apps/v1 Deployment/mcphub-control",
    "apps/v1 Deployment/mcphub-edge",
    "autoscaling/v2 HorizontalPodAutoscaler/mcphub-edge",
    "networking.k8s.io/v1 NetworkPolicy/mcphub-control",
    "policy/v1 PodDisruptionBudget/mcphub-edge",
    "v1 ConfigMap/mcphub-settings",
    "v1 Service/mcphub-control",
    "v1 Service/mcphub-control-admin",
    "v1 Service/mcphub-edge",
  ]);
  const control = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "mcphub-control");
  assert.equal(control.spec.replicas, 1);
  assert.equal(control.spec.strategy.type, "Recreate");
  const settings = objects.find((o) => o.kind === "ConfigMap");
  JSON.parse(settings.data["mcp_settings.json"]); // the settings file is JSON
});

// Each mutation breaks one thing in the rendered base; the check must name it.
const mutations = [
  ["a misspelled field", (o) => { const c = dep(o, "mcphub-edge").spec.template.spec.containers[0];
    c.imagePulPolicy = c.imagePullPolicy; delete c.imagePullPolicy; },
   "Deployment/mcphub-edge: spec.template.spec.containers.0.imagePulPolicy: unknown field"],
  ["a field at the wrong level", (o) => { const p = dep(o, "mcphub-control").spec.template.spec;
    p.readinessProbe = p.containers[0].readinessProbe; },
   "Deployment/mcphub-control: spec.template.spec.readinessProbe: unknown field"],
  ["a string where an integer goes", (o) => { dep(o, "mcphub-control").spec.replicas = "one"; },
   "Deployment/mcphub-control: spec.replicas: must be integer"],
  ["a map where a list goes", (o) => { const c = dep(o, "mcphub-edge").spec.template.spec.containers[0];
    c.ports = { http: 3000 }; },
   "Deployment/mcphub-edge: spec.template.spec.containers.0.ports: must be a list"],
  ["a missing required field", (o) => { delete dep(o, "mcphub-edge").spec.template.spec.containers[0].name; },
   "Deployment/mcphub-edge: spec.template.spec.containers.0: must have required property name"],
  ["a value outside its enum", (o) => { dep(o, "mcphub-control").spec.strategy.type = "Recreat"; },
   "Deployment/mcphub-control: spec.strategy.type: must be equal to one of the allowed values"],
  ["a boolean for an int-or-string", (o) => { svc(o, "mcphub-edge").spec.ports[0].targetPort = true; },
   "Service/mcphub-edge: spec.ports.0.targetPort: must be string"],
  ["an unknown kind", (o) => { svc(o, "mcphub-edge").kind = "Servcie"; },
   "Servcie/mcphub-edge: v1 Servcie is not a kind of the Kubernetes API"],
  ["an API version that does not exist", (o) => { o.find((x) => x.kind === "HorizontalPodAutoscaler").apiVersion = "autoscaling/v3"; },
   "HorizontalPodAutoscaler/mcphub-edge: autoscaling/v3 HorizontalPodAutoscaler is not a kind of the Kubernetes API"],
  ["a Service port pointing at no container port", (o) => { svc(o, "mcphub-control").spec.ports[0].targetPort = "gatway"; },
   "Service/mcphub-control: targetPort gatway is not a named port of the selected pods"],
  ["a writable root filesystem", (o) => {
    dep(o, "mcphub-control").spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem = false; },
   "Deployment/mcphub-control: container control: readOnlyRootFilesystem must be true"],
  ["a container without limits", (o) => { delete dep(o, "mcphub-edge").spec.template.spec.containers[0].resources.limits; },
   "Deployment/mcphub-edge: container edge: resources.limits.cpu is missing"],
  ["a probe on a port the container lacks", (o) => {
    dep(o, "mcphub-control").spec.template.spec.containers[0].livenessProbe.grpc.port = 50053; },
   "Deployment/mcphub-control: container control: livenessProbe port 50053 is not a port of the container"],
];
function dep(objects, name) { return objects.find((o) => o.kind === "Deployment" && o.metadata.name === name); }
function svc(objects, name) { return objects.find((o) => o.kind === "Service" && o.metadata.name === name); }

for (const [what, mutate, expected] of mutations) {
  test(`the check rejects ${what}`, async () => {
    const objects = render(kubectl, join(k8s, "base"));
    mutate(objects);
    const errors = await allErrors(objects, options);
    assert.ok(errors.some((e) => e.startsWith(expected)), `expected "${expected}" among:\n${errors.join("\n")}`);
  });
}

test("the check rejects a broken kustomization rendered by kubectl", async () => {
  const objects = render(kubectl, join(here, "broken"));
  const errors = [];
  for (const o of objects) errors.push(...(await schemaErrors(o)));
  assert.deepEqual(errors.sort(), [
    "PodDisruptionBudget/wrong-type: spec.selector.matchLabels: must be a map",
    "PodDisruptionBudget/wrong-type: spec.selector.matchLabels: must be object",
    "Service/typo: spec.prots: unknown field (not in V1ServiceSpec)",
  ]);
});
