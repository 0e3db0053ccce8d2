import { execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { doctor, type Finding } from "../src/doctor.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// `redflag-server doctor` (issue 17) against a real control plane and its database (PostgreSQL
// when TEST_DATABASE_URL names one, as CI runs it), and against what is wrong: a misspelt
// variable, a data directory others can read, a clock that drifted, a public URL nothing answers,
// a database that is not there, a server that is not running.

const byCheck = (findings: Finding[]) => Object.fromEntries(findings.map((f) => [f.check, f]));

describe("redflag-server doctor", () => {
  let cp: TestControlPlane;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    env = {
      REDFLAG_ADDR: `127.0.0.1:${cp.app.server.port}`,
      REDFLAG_DATA_DIR: cp.dataDir,
      REDFLAG_PUBLIC_URL: cp.url,
      ...(cp.databaseUrl ? { DATABASE_URL: cp.databaseUrl } : {}),
    };
    // The key the test control plane made its database with, as a replica would be given it.
    if (cp.databaseUrl) env.REDFLAG_MASTER_KEY = (await readFile(path.join(cp.dataDir, "master.key"), "utf8")).trim();
    await chmod(cp.dataDir, 0o700);
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  it("finds nothing wrong with a control plane that is well", async () => {
    const findings = await doctor({ env });
    expect(findings.filter((f) => f.level !== "ok")).toEqual([]);
    const checks = byCheck(findings);
    expect(checks.server!.message).toBe(`answers http://127.0.0.1:${cp.app.server.port}/readyz: ready`);
    expect(checks["public URL"]!.message).toBe(`${cp.url} reaches a control plane`);
    if (cp.databaseUrl) {
      expect(checks.database!.message).toMatch(/^PostgreSQL \d+/);
      expect(checks.migrations!.message).toMatch(/^all \d+ applied$/);
      expect(checks["signing key"]!.message).toBe("active key 0 days old");
      expect(findings.filter((f) => f.check === "master key").map((f) => f.message)).toContain("opens the database's signing key");
      expect(checks.clock!.level).toBe("ok");
    }
  });

  it("says what is wrong and how to fix it", async () => {
    const loose = await mkdtemp(path.join(tmpdir(), "rf-doctor-"));
    await chmod(loose, 0o755);
    try {
      const findings = await doctor({
        env: { ...env, REDFLAG_DATA_DIR: loose, REDFLAG_MASTERKEY: "typo", REDFLAG_PUBLIC_URL: "http://127.0.0.1:9" },
        // The database's clock a minute ahead of this machine's.
        now: () => new Date(Date.now() - 60_000),
      });
      const checks = byCheck(findings);
      expect(findings.find((f) => f.check === "configuration" && f.level === "warn")).toMatchObject({ message: "not used: REDFLAG_MASTERKEY" });
      expect(checks["data directory"]).toMatchObject({ level: "warn", fix: `chmod 700 ${loose}` });
      expect(checks["public URL"]).toMatchObject({ level: "fail", fix: expect.stringContaining("agents use this address") });
      if (cp.databaseUrl) expect(checks.clock).toMatchObject({ level: "warn", message: expect.stringMatching(/^this machine's clock is 60 s behind the database's$/) });
      // A replica given another master key than the database was made with.
      if (cp.databaseUrl) {
        const wrong = await doctor({ env: { ...env, REDFLAG_MASTER_KEY: Buffer.alloc(32, 9).toString("base64") } });
        expect(wrong.find((f) => f.check === "master key" && f.level === "fail")).toMatchObject({ message: expect.stringContaining("not the key this database was made with") });
      }
    } finally {
      await rm(loose, { recursive: true, force: true });
    }
  });

  it("fails on a bad configuration, a database it cannot reach and a server that is not running; the command exits 1", async () => {
    const bad = await doctor({ env: { ...env, REDFLAG_ADDR: "nonsense" } });
    expect(bad).toEqual([expect.objectContaining({ level: "fail", check: "configuration", message: expect.stringContaining("REDFLAG_ADDR=nonsense") })]);

    const down = await doctor({
      env: { ...env, REDFLAG_ADDR: "127.0.0.1:9", DATABASE_URL: "postgres://nobody@127.0.0.1:9/none", REDFLAG_MASTER_KEY: Buffer.alloc(32, 1).toString("base64") },
      timeoutMs: 2000,
    });
    const checks = byCheck(down);
    expect(checks.server).toMatchObject({ level: "warn", message: "nothing answers http://127.0.0.1:9/readyz" });
    expect(checks.database).toMatchObject({ level: "fail", fix: expect.stringContaining("check DATABASE_URL") });

    const run = await promisify(execFile)(process.execPath, [path.join(import.meta.dirname, "..", "src", "main.ts"), "doctor"], {
      env: { PATH: process.env.PATH, REDFLAG_ADDR: "127.0.0.1:9", REDFLAG_DATA_DIR: cp.dataDir, DATABASE_URL: "postgres://nobody@127.0.0.1:9/none" },
    }).then(
      () => ({ code: 0, stdout: "" }),
      (err: { code: number; stdout: string }) => err,
    );
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^FAIL {2}database: cannot reach the database: .*\n {6}→ check DATABASE_URL/m);
  }, 60_000);
});
