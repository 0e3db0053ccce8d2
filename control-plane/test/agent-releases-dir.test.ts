import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Issue 14: `npm start` and the Docker image publish the agent builds they find
// (REDFLAG_AGENT_RELEASES_DIR) at start-up, through the same rules as `redflag releases publish`.
describe("publishing the agent builds found at start-up", () => {
  let dir: string;
  let cp: TestControlPlane;
  let logs: Record<string, unknown>[] = [];
  const linux = randomBytes(700 * 1024);
  const windows = randomBytes(1000);
  const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
  const messages = () => logs.map((l) => `${l.level === 40 ? "WARN " : ""}${String(l.msg)}`);
  const download = async (platform: string) => {
    const res = await fetch(`${cp.url}/downloads/${platform}`);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-dist-"));
    await writeFile(path.join(dir, "redflag-agent-0.3.0-linux-x64.tgz"), linux);
    await writeFile(path.join(dir, "redflag-agent-0.3.0-win32-x64.tgz"), windows);
    // What else `npm run build:agent` leaves there (the executables), and stray files: ignored.
    await mkdir(path.join(dir, "linux-x64"));
    await writeFile(path.join(dir, "linux-x64", "redflag-agent"), "#!/bin/sh\n");
    await writeFile(path.join(dir, "notes.txt"), "hello\n");
    await writeFile(path.join(dir, "redflag-agent-latest-linux-x64.tgz"), "not a version\n");
    cp = await startTestControlPlane({ REDFLAG_AGENT_RELEASES_DIR: dir }, undefined, (l) => logs.push(l));
  });
  afterAll(async () => {
    await cp?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("publishes each build, says so, and serves it for download", async () => {
    expect(messages()).toEqual(
      expect.arrayContaining([
        "published agent release 0.3.0 for linux-x64 from redflag-agent-0.3.0-linux-x64.tgz",
        "published agent release 0.3.0 for win32-x64 from redflag-agent-0.3.0-win32-x64.tgz",
        "WARN not publishing redflag-agent-latest-linux-x64.tgz: its name holds no release version and platform (redflag-agent-0.2.0-linux-x64.tgz)",
      ]),
    );
    expect(logs.find((l) => l.platform === "linux-x64" && l.sha256)).toMatchObject({ sha256: sha(linux), sizeBytes: linux.length });
    expect(await download("linux-x64")).toEqual({ status: 200, body: linux });
    expect(await download("win32-x64")).toEqual({ status: 200, body: windows });
    const registry = createClient(ReleaseService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    const { releases } = await registry.listReleases({});
    expect(releases.map((r) => [r.version, r.platform, Buffer.from(r.sha256).toString("hex"), r.publishedBy]).sort()).toEqual([
      ["0.3.0", "linux-x64", sha(linux), "system"],
      ["0.3.0", "win32-x64", sha(windows), "system"],
    ]);
  });

  it("skips what is already published with the same SHA-256 on the next start", async () => {
    logs = [];
    cp = await cp.restart();
    expect(messages()).toEqual(
      expect.arrayContaining([
        "agent release 0.3.0 for linux-x64 is already published (same SHA-256)",
        "agent release 0.3.0 for win32-x64 is already published (same SHA-256)",
      ]),
    );
    expect(messages().filter((m) => m.startsWith("published"))).toEqual([]);
  });

  it("warns about another build under a published version, keeps the published one, and starts", async () => {
    const rebuilt = randomBytes(2000);
    await writeFile(path.join(dir, "redflag-agent-0.3.0-win32-x64.tgz"), rebuilt);
    logs = [];
    cp = await cp.restart();
    const warning = messages().find((m) => m.startsWith("WARN not publishing redflag-agent-0.3.0-win32-x64.tgz"));
    expect(warning).toBe(
      `WARN not publishing redflag-agent-0.3.0-win32-x64.tgz: 0.3.0 for win32-x64 is already published with another artifact (SHA-256 ${sha(windows)}, this one ${sha(rebuilt)}); ` +
        "a published release never changes: raise the agent's version before building, or delete the published one with `redflag releases delete 0.3.0 --platform win32-x64`",
    );
    expect(await download("win32-x64")).toEqual({ status: 200, body: windows });
    expect((await fetch(`${cp.url}/readyz`)).status).toBe(200);
  });

  it("starts without a word of warning when there are no builds, and says how to make them", async () => {
    logs = [];
    cp = await cp.restart({ REDFLAG_AGENT_RELEASES_DIR: path.join(dir, "missing") });
    expect(logs.filter((l) => l.level === 40 && String(l.msg).includes("agent build"))).toEqual([]);
    expect(messages()).toContain("no agent builds to publish: `npm run build:agent` makes them (until then the install commands have nothing to download)");
  });
});
