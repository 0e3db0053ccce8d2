import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { loadConfig, unusedVariables } from "../control-plane/src/config.ts";
import { root } from "./support/processes.ts";
import { startTestControlPlane } from "../control-plane/test/support/control-plane.ts";

// Issue 17: what the deployment files hand the control plane is what its configuration loader
// reads. No Docker daemon or Kubernetes cluster runs here, so the files are read as Compose and
// Kubernetes read them: every variable compose.yaml (and each override in deploy/compose/) passes
// must be one the loader uses and accepts, deploy/compose/env.example must name exactly the
// variables compose.yaml takes from .env, and every manifest of deploy/kubernetes must validate
// against the Kubernetes schemas (kubernetes-models) and agree with the others (selectors,
// probes, the Secret's keys). test/docker-image.test.ts replays the image itself.

const read = (...p: string[]) => readFile(path.join(root, ...p), "utf8");
// Compose's own YAML tags (`!reset []` in an override).
const composeTags = [{ tag: "!reset", resolve: () => null, collection: "seq" as const }, { tag: "!reset", resolve: () => null }];
const composeFile = async (...p: string[]) => parseYaml(await read(...p), { customTags: composeTags }) as { services: Record<string, { environment?: Record<string, string> }> };

// What .env holds, filled in as env.example asks.
const SAMPLE: Record<string, string> = {
  POSTGRES_PASSWORD: "0123456789abcdef0123456789abcdef",
  REDFLAG_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
  REDFLAG_DOMAIN: "redflag.example.com",
  ACME_EMAIL: "ops@example.com",
};

// Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}.
const REFERENCE = /\$\{(\w+)(?:(:?[-?])([^}]*))?\}/g;
function interpolate(text: string, vars: Record<string, string>): string {
  return text.replace(REFERENCE, (_m, name: string, op: string | undefined, arg: string) => {
    const value = vars[name];
    if (value !== undefined && (value !== "" || !op?.startsWith(":"))) return value;
    if (op?.endsWith("-")) return arg;
    if (op?.endsWith("?")) throw new Error(`${name}: ${arg}`);
    return "";
  });
}

describe("deployments", () => {
  it("compose.yaml passes the control plane only variables its configuration uses and accepts, alone and with each override", async () => {
    const base = await composeFile("compose.yaml");
    const env = base.services["control-plane"]!.environment!;
    for (const override of [undefined, "tls.yaml", "caddy.yaml", "traefik.yaml"]) {
      const extra = override ? ((await composeFile("deploy", "compose", override)).services["control-plane"]?.environment ?? {}) : {};
      const given = Object.fromEntries(Object.entries({ ...env, ...extra }).map(([k, v]) => [k, interpolate(String(v), SAMPLE)]));
      expect(unusedVariables(given), `${override ?? "compose.yaml"}`).toEqual([]);
      const config = loadConfig(given);
      expect(config.databaseUrl).toMatch(/^postgres:\/\/redflag:/);
      expect(config.host).toBe("0.0.0.0");
    }
  });

  it("env.example names exactly what compose.yaml takes from .env, and the secrets have no default", async () => {
    const compose = await read("compose.yaml");
    const example = await read("deploy", "compose", "env.example");
    const taken = new Set([...compose.matchAll(REFERENCE)].map((m) => m[1]!));
    const named = new Set([...example.matchAll(/^(\w+)=/gm)].map((m) => m[1]!));
    expect([...named].sort()).toEqual([...taken].sort());
    for (const secret of ["POSTGRES_PASSWORD", "REDFLAG_MASTER_KEY"]) expect(compose).toMatch(new RegExp(`\\$\\{${secret}:\\?`));
    // The database's major version is pinned, and the control plane is checked on /readyz.
    expect(compose).toMatch(/image: postgres:\d+\n/);
    expect(compose).toContain('test: ["CMD", "node", "control-plane/src/healthcheck.ts"]');
  });

  it("deploy/kubernetes validates against the Kubernetes schemas, and its parts agree", async () => {
    const kustomization = parseYaml(await read("deploy", "kubernetes", "kustomization.yaml")) as { resources: string[] };
    const objects: { apiVersion: string; kind: string; metadata: { name: string }; spec: Record<string, any> }[] = [];
    for (const file of kustomization.resources) {
      for (const doc of parseAllDocuments(await read("deploy", "kubernetes", file))) objects.push(doc.toJS());
    }
    type Models = Record<string, new (o: never) => { validate(): void }>;
    const models: Record<string, () => Promise<unknown>> = {
      "apps/v1": () => import("kubernetes-models/apps/v1"),
      v1: () => import("kubernetes-models/v1"),
      "policy/v1": () => import("kubernetes-models/policy/v1"),
    };
    for (const o of objects) {
      const Model = ((await models[o.apiVersion]!()) as Models)[o.kind]!;
      expect(() => new Model(o as never).validate(), `${o.kind} ${o.metadata.name}`).not.toThrow();
    }
    const byKind = (kind: string) => objects.find((o) => o.kind === kind)!;
    const deployment = byKind("Deployment");
    const labels = deployment.spec.template.metadata.labels;
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(byKind("Service").spec.selector).toEqual(labels);
    expect(byKind("PodDisruptionBudget").spec.selector.matchLabels).toEqual(labels);
    const container = deployment.spec.template.spec.containers[0];
    expect(container.livenessProbe.httpGet.path).toBe("/healthz");
    expect(container.startupProbe.httpGet.path).toBe("/readyz");
    expect(container.readinessProbe.grpc.port).toBe(8080);
    expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });

    // The master key and the database come from the Secret the kustomization's comment creates;
    // every variable is one the configuration uses and accepts.
    const secretKeys = new Set([...(await read("deploy", "kubernetes", "kustomization.yaml")).matchAll(/--from-literal=([\w-]+)=/g)].map((m) => m[1]!));
    const env: Record<string, string> = {};
    for (const e of container.env as { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[]) {
      if (e.valueFrom) {
        expect(secretKeys.has(e.valueFrom.secretKeyRef.key), e.name).toBe(true);
        env[e.name] = e.name === "REDFLAG_MASTER_KEY" ? SAMPLE.REDFLAG_MASTER_KEY! : "postgres://redflag:x@db:5432/redflag";
      } else env[e.name] = e.value!;
    }
    expect(Object.keys(env)).toEqual(expect.arrayContaining(["DATABASE_URL", "REDFLAG_MASTER_KEY"]));
    expect(unusedVariables(env)).toEqual([]);
    expect(loadConfig(env).publicUrl).toBe("https://redflag.example.com");
  });

  it("the Grafana dashboard and the Prometheus job ask only for metrics a control plane serves", async () => {
    const dashboard = JSON.parse(await read("deploy", "monitoring", "grafana-dashboard.json")) as { panels: { targets: { expr: string }[] }[] };
    const asked = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/\b(redflag|process)_[a-z_]+/g) ?? [])));
    expect(asked.size).toBeGreaterThan(8);
    const prometheus = parseYaml(await read("deploy", "monitoring", "prometheus.yml")) as { scrape_configs: { metrics_path: string }[] };
    const cp = await startTestControlPlane();
    try {
      const res = await fetch(`${cp.url}${prometheus.scrape_configs[0]!.metrics_path}`);
      expect(res.status).toBe(200);
      const served = new Set([...(await res.text()).matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!));
      // A histogram is asked for by its _bucket series.
      for (const name of asked) expect(served.has(name.replace(/_bucket$/, "")), name).toBe(true);
    } finally {
      await cp.close();
    }
  }, 60_000);
});
