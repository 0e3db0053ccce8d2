import { create } from "@bufbuild/protobuf";
import { CollectSpecsSchema, CommandOutcome } from "@redflag/gen/command_pb";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startFakeControlPlane, type FakeControlPlane } from "./support/fake-control-plane.ts";

// The CLI as operators and the service manager run it: real processes, exit codes, stdout/stderr.
const repo = path.resolve(import.meta.dirname, "..", "..");
const env = { ...process.env, REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_APT_REFRESH: "0", REDFLAG_AGENT_LONG_POLL_SECONDS: "0" };

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function agent(args: string[], extraEnv: Record<string, string> = {}): Promise<Result> & { child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, ["agent/src/main.ts", ...args], { cwd: repo, env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d));
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  const done = new Promise<Result>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  return Object.assign(done, { child });
}

let cp: FakeControlPlane;
let dir: string;
let stateDir: string;
beforeAll(async () => {
  cp = await startFakeControlPlane();
  dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-cli-"));
  stateDir = path.join(dir, "state");
});
afterAll(async () => {
  await cp.close();
  await rm(dir, { recursive: true, force: true });
});

describe("output to a pipe the reader closed", () => {
  it("ends quietly with the command's exit code, as `redflag-agent --help | head -1` does", async () => {
    const run = agent(["--help"]);
    // The reader goes away before a byte is read.
    run.child.stdout!.destroy();
    const { code, stderr } = await run;
    expect(stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(code).toBe(0);
  });
});

describe("redflag-agent", () => {
  it("says it is not registered (exit 2)", async () => {
    const res = await agent(["run", "--once", "--state-dir", stateDir]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^redflag-agent: not registered: .* run `redflag-agent register --server URL --token TOKEN` first\n$/);
    const status = await agent(["status", "--state-dir", stateDir]);
    expect(status.code).toBe(2);
  });

  it("rejects bad flags and environment (exit 2)", async () => {
    expect((await agent(["register", "--token", "x"])).code).toBe(2);
    const badEnv = await agent(["status"], { REDFLAG_AGENT_APT_REFRESH: "maybe" });
    expect(badEnv.code).toBe(2);
    expect(badEnv.stderr).toBe("redflag-agent: invalid environment: REDFLAG_AGENT_APT_REFRESH=maybe must be 1 or 0\n");
  });

  it("refuses a token file that is far too long to be a token, without reading it to the end", async () => {
    const big = path.join(dir, "big-token");
    await writeFile(big, "x".repeat(5000));
    for (const [file, name] of [[big, big], ["/dev/zero", "/dev/zero"]] as const) {
      const reg = await agent(["register", "--server", cp.url, "--token-file", file, "--state-dir", path.join(dir, "never")]);
      expect(reg.code).toBe(2);
      expect(reg.stderr).toBe(`redflag-agent: ${name} holds more than 4096 bytes: that is not a registration token\n`);
    }
  });

  it("registers with a token file, then shows its status without secrets", async () => {
    const tokenFile = path.join(dir, "token");
    await writeFile(tokenFile, `${cp.token}\n`);
    const reg = await agent(["register", "--server", cp.url, "--token-file", tokenFile, "--state-dir", stateDir]);
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = [...cp.agents.keys()][0]!;
    // The fingerprint is the one the console shows: SHA-256 of the public key in colon hex.
    const fingerprint = createHash("sha256").update(cp.key.publicKey).digest("hex").match(/../g)!.join(":");
    expect(reg.stdout).toBe(
      `registered as agent ${agentId}; pinned signing keys: ${cp.key.keyId}\n  fingerprint ${fingerprint}\n` +
        "no --fingerprint given: compare the fingerprints above with the console's Security page\n",
    );

    const json = await agent(["status", "--json", "--state-dir", stateDir]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ agentId, server: cp.url, pinnedKeyIds: [cp.key.keyId], lastSequence: "0", journal: { entries: 0 } });
    const text = await agent(["status", "--state-dir", stateDir]);
    expect(text.stdout).toMatch(new RegExp(`^agent ID: +${agentId}$`, "m"));
    const server = cp.agents.get(agentId)!;
    for (const out of [json.stdout, text.stdout, reg.stdout, reg.stderr]) {
      for (const secret of [cp.token, server.accessToken, server.refreshToken]) expect(out).not.toContain(secret);
    }
  });

  it("pins the keys only when a key with the given fingerprint signed them, and leaves the state alone otherwise", async () => {
    const fingerprint = createHash("sha256").update(cp.key.publicKey).digest("hex").match(/../g)!.join(":");
    const other = path.join(dir, "fingerprinted");
    const wrong = "ab:".repeat(31) + "ab";
    const refused = await agent(["register", "--server", cp.url, "--token", cp.token, "--state-dir", other, "--fingerprint", wrong]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `redflag-agent: registration refused: the control plane's signing keys do not include the one with fingerprint ${wrong} ` +
        `(offered: ${fingerprint}); check the fingerprint, or someone is intercepting the connection\n`,
    );
    expect((await agent(["status", "--state-dir", other])).stderr).toMatch(/not registered/);

    const typo = await agent(["register", "--server", cp.url, "--token", cp.token, "--state-dir", other, "--fingerprint", fingerprint.slice(3)]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/^redflag-agent: --fingerprint \S+ is not a signing-key fingerprint: expected the SHA-256 the console shows, 32 colon-separated hex pairs \(ab:cd:…\)\n$/);

    const ok = await agent(["register", "--server", cp.url, "--token", cp.token, "--state-dir", other, "--fingerprint", fingerprint.toUpperCase()]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`pinned signing keys: ${cp.key.keyId}\n  fingerprint ${fingerprint}\nsigned by the key with the expected fingerprint\n$`));
  });

  it("refuses plain http to another host unless told so, and then only with a fingerprint (exit 2, before any connection)", async () => {
    const other = path.join(dir, "insecure");
    const plain = await agent(["register", "--server", "http://192.0.2.10:8080", "--token", cp.token, "--state-dir", other]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toBe(
      "redflag-agent: refusing plain http:// to 192.0.2.10:8080: on the way a man in the middle could read the registration token and hand this agent signing keys of its own. " +
        "Use https:// (with --ca for a private CA), or, on a network you trust, pass --insecure-http together with --fingerprint\n",
    );
    const noFingerprint = await agent(["register", "--server", "http://192.0.2.10:8080", "--token", cp.token, "--state-dir", other, "--insecure-http"]);
    expect(noFingerprint.code).toBe(2);
    expect(noFingerprint.stderr).toMatch(/^redflag-agent: --insecure-http needs --fingerprint: /);
    // Loopback stays allowed: this test's own control plane is plain http on 127.0.0.1.
    expect(cp.url).toMatch(/^http:\/\/127\.0\.0\.1:/);
  });

  it("runs one cycle and logs JSON lines without secrets", async () => {
    const id = cp.queue({ case: "collectSpecs", value: create(CollectSpecsSchema) });
    const res = await agent(["run", "--once", "--state-dir", stateDir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toBe("");
    expect(cp.results.get(id)?.outcome).toBe(CommandOutcome.SUCCEEDED);
    const lines = res.stderr.trim().split("\n").map((l) => JSON.parse(l) as { msg: string; service: string });
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(["agent starting", "running command", "command finished", "cycle finished"]));
    const server = [...cp.agents.values()][0]!;
    for (const secret of [cp.token, server.accessToken, server.refreshToken]) expect(res.stderr).not.toContain(secret);
  });

  it("keeps one agent (or registration) per state directory, and stops cleanly on SIGTERM", async () => {
    const daemon = agent(["run", "--state-dir", stateDir]);
    onTestFinished(() => {
      if (daemon.child.exitCode === null) daemon.child.kill("SIGKILL");
    });
    const polls = cp.polls.length;
    const deadline = Date.now() + 15_000;
    while (cp.polls.length === polls && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(cp.polls.length).toBeGreaterThan(polls);

    const second = await agent(["run", "--once", "--state-dir", stateDir]);
    expect(second.code, second.stderr).toBe(2);
    expect(second.stderr).toMatch(new RegExp(`another redflag-agent \\(pid ${daemon.child.pid}\\) is using`));
    const reRegister = await agent(["register", "--server", cp.url, "--token", cp.token, "--state-dir", stateDir]);
    expect(reRegister.code).toBe(2);
    expect(reRegister.stderr).toMatch(/is using .*; stop it before registering again\n$/);

    const id = cp.queue({ case: "collectSpecs", value: create(CollectSpecsSchema) });
    const until = Date.now() + 15_000;
    while (!cp.results.has(id) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(cp.results.get(id)?.outcome).toBe(CommandOutcome.SUCCEEDED);

    daemon.child.kill("SIGTERM");
    const res = await daemon;
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/"msg":"agent stopped"/);
  });

  it("exits 1 with one clear line when the control plane is unreachable", async () => {
    await cp.close();
    const res = await agent(["run", "--once", "--state-dir", stateDir]);
    expect(res.code, res.stderr).toBe(1);
    const last = res.stderr.trim().split("\n").at(-1)!;
    expect(last, res.stderr).toMatch(new RegExp(`^redflag-agent: poll cycle against ${cp.url} failed: Unavailable: .*ECONNREFUSED`));
  });

  it("runs through the bin shim", async () => {
    const child = spawn(process.execPath, ["agent/bin/redflag-agent.js", "--version"], { cwd: repo, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    const code = await new Promise((r) => child.on("close", r));
    expect(code).toBe(0);
    expect(out).toBe("0.1.0\n");
  });
});
