import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { SignedKeySetSchema, TrustedKeySchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newSigningKey, signKeySet } from "../agent/test/support/fake-control-plane.ts";
import { KEY_SET_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { injectedCommand, startMitm, type Mitm } from "./support/mitm.ts";
import { root, run } from "./support/processes.ts";

const execFileP = promisify(execFile);

// Enrolment with real processes: a real control plane, the real `redflag` CLI and real agent
// processes, with a man in the middle where the threat needs one.
let cp: TestControlPlane;
let dir: string;
const cliEnv = () => ({ REDFLAG_SERVER: cp.url, REDFLAG_API_KEY: cp.adminKey });
const redflag = (...args: string[]) => run(["control-plane/src/cli/main.ts", ...args], { env: cliEnv() });

beforeAll(async () => {
  cp = await startTestControlPlane();
  dir = await mkdtemp(path.join(tmpdir(), "rf-enrol-"));
});
afterAll(async () => {
  await cp?.close();
  await rm(dir, { recursive: true, force: true });
});

function agentEnv() {
  return { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_APT_REFRESH: "0", REDFLAG_AGENT_LONG_POLL_SECONDS: "0" };
}
const pinned = async (stateDir: string) =>
  (JSON.parse(await readFile(path.join(stateDir, "pinned-keys.json"), "utf8")) as { keys: { keyId: string }[] }).keys.map((k) => k.keyId).sort();
const securityClient = () =>
  createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));

describe("a man in the middle of `redflag-agent register` over plain http", () => {
  let mitm: Mitm;
  beforeAll(async () => {
    mitm = await startMitm(cp.url);
  });
  afterAll(async () => {
    await mitm?.close();
  });
  const attacker = newSigningKey();
  const attackerKey = create(TrustedKeySchema, { keyId: attacker.keyId, publicKey: attacker.publicKey });

  it("adding its key to the genuine answer gets nothing pinned, and the command it signs is not run", { timeout: 120_000 }, async () => {
    const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 5 });
    const env = agentEnv();
    const stateDir = path.join(dir, "mitm-append");
    const register = () => run(["agent/src/main.ts", "register", "--server", mitm.url, "--token", secret, "--fingerprint", signingKeyFingerprint, "--state-dir", stateDir], { env });

    // Its key added to the signed set as well, with its own signature beside the genuine one.
    mitm.onRegister = (res) => {
      const set = fromBinary(TrustedKeySetSchema, res.keySet!.keySet);
      set.keys.push(attackerKey);
      const body = toBinary(TrustedKeySetSchema, set);
      const keySet = create(SignedKeySetSchema, {
        keySet: body,
        signatures: [...res.keySet!.signatures, { keyId: attacker.keyId, signature: signEnvelope(attacker.secretKey, KEY_SET_TYPE, body) }],
      });
      return { ...res, trustedKeys: [...res.trustedKeys, attackerKey], keySet };
    };
    const widened = await register();
    expect(widened.code).toBe(1);
    expect(widened.stderr).toBe(
      `redflag-agent: registration refused: the key set is not signed by the key with fingerprint ${signingKeyFingerprint}; someone may be intercepting the connection\n`,
    );
    await expect(readFile(path.join(stateDir, "pinned-keys.json"))).rejects.toMatchObject({ code: "ENOENT" });

    // A set of its own instead of the genuine one.
    mitm.onRegister = (res) => ({ ...res, trustedKeys: [attackerKey], keySet: signKeySet([attacker], [attacker], new Date()) });
    const swapped = await register();
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toMatch(new RegExp(`registration refused: the control plane's signing keys do not include the one with fingerprint ${signingKeyFingerprint} \\(offered: `));

    // The signed set stripped, leaving only the plain list to go by.
    mitm.onRegister = (res) => ({ ...res, keySet: undefined });
    expect((await register()).stderr).toMatch(/registration refused: the control plane sent no signed key set, so the signing-key fingerprint cannot be checked/);
    await expect(readFile(path.join(stateDir, "pinned-keys.json"))).rejects.toMatchObject({ code: "ENOENT" });

    // Only the plain list widened: registration goes through and pins the genuine key alone.
    mitm.onRegister = (res) => ({ ...res, trustedKeys: [...res.trustedKeys, attackerKey] });
    const listed = await register();
    expect(listed.code, listed.stderr).toBe(0);
    expect(await pinned(stateDir)).toEqual([cp.app.signingKeyId]);

    // Then it signs a command with its own key: rejected, never run.
    const { agentId } = JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string };
    const injected = randomUUID();
    mitm.onPoll = (res, req) => ({
      ...res,
      commands: [
        ...res.commands,
        injectedCommand(injected, agentId, req.nonce, attacker),
      ],
    });
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(once.code, once.stderr).toBe(0);
    const result = mitm.reports.flatMap((r) => r.results).find((r) => r.commandId === injected);
    expect(result).toMatchObject({ outcome: CommandOutcome.REJECTED, message: expect.stringContaining(`unknown signing key ${attacker.keyId}`) });
    mitm.onRegister = undefined;
    mitm.onPoll = undefined;
  });
});

describe("the enrol commands `redflag tokens create` prints", () => {
  // Stand-ins for what cannot be real here: sudo (the tests already run as root) and systemctl
  // (no systemd in the container). The release the install script downloads is this checkout's
  // agent behind a one-line launcher (test/install-script.test.ts does the same with the
  // single-file build); everything it installs lands under a root prefix.
  let bin: string;
  let prefix: string;
  beforeAll(async () => {
    bin = path.join(dir, "bin");
    await mkdir(bin);
    const shim = async (name: string, body: string) => {
      await writeFile(path.join(bin, name), `#!/bin/sh\n${body}\n`);
      await chmod(path.join(bin, name), 0o755);
    };
    await shim("sudo", 'exec "$@"');
    await shim("systemctl", 'echo "$*" >> "$REDFLAG_INSTALL_ROOT/systemctl.log"');
    await shim("redflag", `exec '${process.execPath}' '${path.join(root, "control-plane/bin/redflag.js")}' "$@"`);
    const release = path.join(dir, "release");
    await mkdir(path.join(release, "bin"), { recursive: true });
    await writeFile(path.join(release, "bin", "redflag-agent"), `#!/bin/sh\nexec '${process.execPath}' '${path.join(root, "agent/bin/redflag-agent.js")}' "$@"\n`, { mode: 0o755 });
    const dist = path.join(dir, "dist");
    await mkdir(dist);
    await execFileP("tar", ["-czf", path.join(dist, `redflag-agent-0.0.1-linux-${process.arch}.tgz`), "-C", release, "bin/redflag-agent"]);
    const published = await redflag("releases", "publish", dist);
    expect(published.code, published.stderr).toBe(0);
  });

  // Runs a pasted Linux command with `sh -e`, installing under a fresh root prefix.
  async function paste(command: string, env: Record<string, string>) {
    prefix = await mkdtemp(path.join(dir, "root-"));
    await mkdir(path.join(prefix, "run", "systemd", "system"), { recursive: true });
    return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile("sh", ["-e", "-c", command], { env: { ...process.env, ...env, REDFLAG_INSTALL_ROOT: prefix, PATH: `${bin}:${process.env.PATH}` }, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }
  const stateDir = () => path.join(prefix, "var/lib/redflag-agent");

  it.runIf(process.getuid?.() === 0 && process.arch === "x64")("enrol this host as printed, pinning the signing key by its fingerprint", async () => {
    const created = await redflag("tokens", "create", "--seats", "1", "--note", "printed");
    expect(created.code, created.stderr).toBe(0);
    const fingerprint = /Agents pin the signing key with fingerprint\n(\S+)\n/.exec(created.stdout)?.[1];
    const security = await securityClient().getSecurityOverview({});
    expect(fingerprint).toBe(security.signingKeys.find((k) => k.state === "active")!.fingerprint);
    const linux = /# linux\n([\s\S]+?)\n\n/.exec(created.stdout)?.[1];
    expect(linux).toContain(`--fingerprint ${fingerprint}`);
    expect(/# macos\n[^#]*--fingerprint (\S+)/.exec(created.stdout)?.[1]).toBe(fingerprint);
    expect(/# windows\n[^#]*-Fingerprint (\S+)/.exec(created.stdout)?.[1]).toBe(fingerprint);

    const env = agentEnv();
    const pasted = await paste(linux!, env);
    expect(pasted.code, pasted.stdout + pasted.stderr).toBe(0);
    expect(pasted.stdout).toContain("vouched for by the key with the expected fingerprint");
    expect(await readFile(path.join(prefix, "systemctl.log"), "utf8")).toBe("daemon-reload\nenable redflag-agent.service\nrestart redflag-agent.service\n");
    expect(await pinned(stateDir())).toEqual([cp.app.signingKeyId]);

    // The agent works: a command queued for it runs.
    const agentId = (JSON.parse(await readFile(path.join(stateDir(), "agent.json"), "utf8")) as { agentId: string }).agentId;
    const cmd = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir()], { env });
    expect(once.code, once.stderr).toBe(0);
    expect((await cp.admin.commands.getCommand({ id: cmd.id })).command?.state).toBe(CommandState.SUCCEEDED);
  });

  const lanAddress = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === "IPv4" && !a.internal)?.address;

  it.runIf(process.getuid?.() === 0 && process.arch === "x64" && lanAddress !== undefined)("to a plain-http address on the network, as printed, with --insecure-http and the fingerprint", async () => {
    // The control plane reached at this host's network address, through a TCP relay (the test
    // control plane listens on loopback only); the console and CLI print what the caller used.
    const upstream = new URL(cp.url);
    const relay = net.createServer((socket) => {
      const up = net.connect(Number(upstream.port), upstream.hostname);
      socket.pipe(up).pipe(socket);
      socket.on("error", () => up.destroy());
      up.on("error", () => socket.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, lanAddress, resolve));
    const relayUrl = `http://${lanAddress}:${(relay.address() as net.AddressInfo).port}`;
    try {
      const tokens = createClient(TokenService, createConnectTransport({ baseUrl: relayUrl, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
      const res = await tokens.createRegistrationToken({ seats: 1 });
      const linux = res.installCommands.find((c) => c.platform === "linux")!.command;
      expect(linux).toBe(
        "# plain http: anyone on the network path can read the token; serve https (REDFLAG_TLS_CERT, REDFLAG_TLS_KEY) to drop --insecure-http\n" +
          `curl -fsSL '${relayUrl}/install/linux.sh' | sudo sh -s -- --token '${res.secret}' --fingerprint ${res.signingKeyFingerprint} --insecure-http`,
      );
      expect(res.serverUrlWarning).toBe("");
      for (const c of res.installCommands) expect(c.command).toMatch(c.platform === "windows" ? `-Fingerprint ${res.signingKeyFingerprint} -InsecureHttp` : `--fingerprint ${res.signingKeyFingerprint} --insecure-http`);
      const pasted = await paste(linux, agentEnv());
      expect(pasted.code, pasted.stdout + pasted.stderr).toBe(0);
      expect(pasted.stdout).toContain(`registered with ${relayUrl} as agent`);
      expect(pasted.stdout).toContain("vouched for by the key with the expected fingerprint");
      expect(await pinned(stateDir())).toEqual([cp.app.signingKeyId]);
      // Without --insecure-http the script refuses before it downloads anything.
      const refused = await paste(linux.replace(/ --insecure-http$/, ""), agentEnv());
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`redflag-install: refusing plain http:// to ${relayUrl}: anyone on the way could read the token and swap the agent.`);
      expect(await readdir(prefix)).toEqual(["run"]);
    } finally {
      await new Promise((resolve) => relay.close(resolve));
    }
  });
});

describe("re-registering a known machine with real agents", () => {
  // One machine (the seed), state directories standing for hosts: each has its own agent key.
  async function enrolled(name: string) {
    const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 5 });
    const env = agentEnv();
    const victimDir = path.join(dir, name);
    const register = (stateDir: string) => run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--fingerprint", signingKeyFingerprint, "--state-dir", stateDir], { env });
    const first = await register(victimDir);
    expect(first.code, first.stderr).toBe(0);
    const agentId = (JSON.parse(await readFile(path.join(victimDir, "agent.json"), "utf8")) as { agentId: string }).agentId;
    return { env, victimDir, register, agentId };
  }

  it("another host claiming the machine is refused; the agent's own re-registration works", async () => {
    const { env, victimDir, register, agentId } = await enrolled("victim");

    // Same machine ID (the seed), another state directory: another key.
    const intruder = await register(path.join(dir, "intruder"));
    expect(intruder.code).toBe(1);
    expect(intruder.stderr).toContain(
      `PermissionDenied: this machine is already registered as agent ${agentId}, and the registration proof is not signed by that agent's key; ` +
        `if the host was reinstalled or lost its key, an admin can allow one re-registration: redflag agents allow-reregistration ${agentId}`,
    );
    const security = securityClient();
    expect((await security.listSecurityEvents({ type: "registration_refused" })).events[0]).toMatchObject({ agentId, severity: "critical" });

    // The agent lost its credentials (revoked, or a damaged file): it registers again by itself
    // with its key, and carries on.
    const file = path.join(victimDir, "agent.json");
    const saved = JSON.parse(await readFile(file, "utf8")) as Record<string, string>;
    await writeFile(file, JSON.stringify({ ...saved, accessToken: "not.a.token", refreshToken: "lost" }));
    const cmd = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", victimDir], { env });
    expect(once.code, once.stderr).toBe(0);
    expect(once.stderr).toContain("agent registered again with its registration token");
    expect((await cp.admin.commands.getCommand({ id: cmd.id })).command?.state).toBe(CommandState.SUCCEEDED);
    expect((await security.listSecurityEvents({ type: "agent_reregistered" })).events[0]).toMatchObject({ agentId, severity: "info" });
  });

  it("an agent that keeps no token (installed by the install script) says how to recover instead of registering again", async () => {
    const { env, victimDir, agentId } = await enrolled("no-token");
    const file = path.join(victimDir, "agent.json");
    const saved = JSON.parse(await readFile(file, "utf8")) as Record<string, string>;
    await writeFile(file, JSON.stringify({ ...saved, registrationToken: "", accessToken: "not.a.token", refreshToken: "lost" }));
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", victimDir], { env });
    expect(once.code).not.toBe(0);
    expect(once.stderr).toContain(
      "the agent's credentials were refused, and it keeps no registration token to register again with (the install script leaves none on disk); " +
        `stop the agent's service and run \`redflag-agent register --server ${cp.url} --token <new token> --fingerprint <fingerprint>\` ` +
        "(it keeps this host's key and agent ID), then start the service again",
    );
    expect((await securityClient().listSecurityEvents({ type: "agent_reregistered" })).events.filter((e) => e.agentId === agentId)).toEqual([]);
    // The hint, followed: the same agent, working again.
    const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const again = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--fingerprint", signingKeyFingerprint, "--state-dir", victimDir], { env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`registered as agent ${agentId}`);
    const cmd = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    expect((await run(["agent/src/main.ts", "run", "--once", "--state-dir", victimDir], { env })).code).toBe(0);
    expect((await cp.admin.commands.getCommand({ id: cmd.id })).command?.state).toBe(CommandState.SUCCEEDED);
  });

  it("a decommissioned agent stays out, even with its key, until the command printed in the refusal lets it back once", { timeout: 120_000 }, async () => {
    const { env, victimDir, register, agentId } = await enrolled("decommissioned");
    // Decommissioned: its own key no longer gets it back in.
    expect((await redflag("agents", "decommission", agentId)).code).toBe(0);
    const refused = await register(victimDir);
    expect(refused.code).toBe(1);
    const printed = /: (redflag agents allow-reregistration \S+)\n$/.exec(refused.stderr)?.[1];
    expect(printed).toBe(`redflag agents allow-reregistration ${agentId}`);

    // The admin runs the command exactly as printed.
    const bin = path.join(dir, "cli-bin");
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, "redflag"), `#!/bin/sh\nexec '${process.execPath}' '${path.join(root, "control-plane/bin/redflag.js")}' "$@"\n`);
    await chmod(path.join(bin, "redflag"), 0o755);
    const allowed = await execFileP("sh", ["-e", "-c", printed!], { env: { ...process.env, ...cliEnv(), PATH: `${bin}:${process.env.PATH}` } });
    expect(allowed.stdout).toMatch(/^\S+ may register again once until \d{4}-\d\d-\d\dT[\d:.]+Z; run `redflag-agent register` on it before then\n$/);

    const back = await register(victimDir);
    expect(back.code, back.stderr).toBe(0);
    const cmd2 = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    expect((await run(["agent/src/main.ts", "run", "--once", "--state-dir", victimDir], { env })).code).toBe(0);
    expect((await cp.admin.commands.getCommand({ id: cmd2.id })).command?.state).toBe(CommandState.SUCCEEDED);
    // Used once: a second registration without the key is refused again.
    expect((await register(path.join(dir, "intruder-2"))).code).toBe(1);
  });
});
