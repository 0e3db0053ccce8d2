import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { digestOf, startFakeEngine, startFakeRegistry, type FakeEngine, type FakeRegistry } from "../../test/support/fake-docker.ts";
import { CONTAINER_NOTE, createDockerInstaller } from "./docker.ts";
import type { InstallOptions } from "./types.ts";

describe("docker installer against a fake engine", () => {
  let dir: string;
  let engine: FakeEngine;
  let hub: FakeRegistry;
  const v1 = digestOf("app v1");
  const v2 = digestOf("app v2");
  const opts: InstallOptions = { timeoutMs: 10_000, env: {}, isRoot: true, holds: new Set() };
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "docker", name, version });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-docker-install-"));
    hub = await startFakeRegistry({ auth: "bearer" });
    engine = await startFakeEngine(dir, [
      { Id: "sha256:old", RepoTags: ["acme/app:stable"], RepoDigests: [`acme/app@${v1}`], Size: 1 },
      { Id: "sha256:redis", RepoTags: ["redis:7"], RepoDigests: [`redis@${digestOf("redis")}`], Size: 1 },
    ]);
    hub.tags.set("acme/app:stable", v2);
    hub.tags.set("library/redis:7", digestOf("redis"));
  });
  afterEach(async () => {
    await Promise.all([engine.close(), hub.close()]);
    await rm(dir, { recursive: true, force: true });
  });
  const installer = () => {
    const config = path.join(dir, "config.json");
    return createDockerInstaller({ socketPath: engine.socketPath, registryUrl: () => hub.url, configPath: config });
  };

  it("previews from the registry without pulling", async () => {
    const sim = await installer().dryRun!([ref("acme/app:stable"), ref("redis:7")], opts);
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "acme/app:stable", v1, v2]]);
    expect(engine.requests.some((r) => r.url.includes("/images/create"))).toBe(false);
  });

  it("pulls the new image and reports digests; an image already current is skipped", async () => {
    engine.pulls.set("acme/app:stable", { digest: v2 });
    engine.pulls.set("redis:7", { digest: digestOf("redis") });
    const out = await installer().install([ref("acme/app:stable"), ref("redis:7")], opts);
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["acme/app:stable", PackageResultState.INSTALLED, v1, v2, CONTAINER_NOTE],
      ["redis:7", PackageResultState.SKIPPED, digestOf("redis"), digestOf("redis"), "already up to date"],
    ]);
    expect(out.output[0]).toMatchObject({ argv: ["POST", "/v1.41/images/create", "fromImage=acme/app", "tag=stable"], exitCode: 0 });
    expect(out.output[0]!.stdoutTail).toContain(`Digest: ${v2}`);
  });

  it("reports a pull the daemon refuses, with its message", async () => {
    engine.pulls.set("acme/app:stable", { error: "toomanyrequests: You have reached your pull rate limit." });
    const out = await installer().install([ref("acme/app:stable")], opts);
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, fromVersion: v1, reason: "toomanyrequests: You have reached your pull rate limit." });
    expect(out.output[0]).toMatchObject({ exitCode: 1, stderrTail: "toomanyrequests: You have reached your pull rate limit." });
  });

  it("sends registry credentials with the pull", async () => {
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ auths: { "docker.io": { username: "bot", password: "pw" } } }));
    engine.pulls.set("acme/app:stable", { digest: v2 });
    await installer().install([ref("acme/app:stable")], opts);
    const header = engine.requests.find((r) => r.url.includes("/images/create"))!.headers["x-registry-auth"] as string;
    expect(JSON.parse(Buffer.from(header, "base64url").toString())).toEqual({ username: "bot", password: "pw", serveraddress: "docker.io" });
  });

  it("rolls back by pulling the earlier digest and re-pointing the tag at it", async () => {
    engine.pulls.set("acme/app:stable", { digest: v2 });
    await installer().install([ref("acme/app:stable")], opts);
    engine.pulls.set(`acme/app@${v1}`, { digest: v1 });
    const out = await installer().rollback!(ref("acme/app:stable", v1), opts);
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: v2, toVersion: v1 });
    const tagged = engine.images.find((i) => i.RepoTags.includes("acme/app:stable"))!;
    expect(tagged.RepoDigests).toContain(`acme/app@${v1}`);
  });

  it("refuses a rollback target that is not a digest, and a name that is not a reference", async () => {
    const bad = await installer().rollback!(ref("acme/app:stable", "1.2.3"), opts);
    expect(bad.packages[0]!.reason).toBe('a Docker rollback needs the image digest (sha256:…), not "1.2.3"');
    const weird = await installer().install([ref("Not/A:Ref:x")], opts);
    expect(weird.packages[0]).toMatchObject({ state: PackageResultState.FAILED });
    expect(engine.requests.some((r) => r.url.includes("/images/create"))).toBe(false);
  });
});
