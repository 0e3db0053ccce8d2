import { create, toBinary } from "@bufbuild/protobuf";
import { ArtifactManifestSchema, CommandOutcome, CommandSchema, UpdateAgentSchema } from "@redflag/gen/command_pb";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, readlink, readdir, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBreakers } from "../breaker.ts";
import { COMMAND_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "../trust/envelope.ts";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { createHeartbeat } from "../heartbeat.ts";
import { silentLogger } from "../log.ts";
import { createSourceLocks } from "../source-lock.ts";
import { AGENT_VERSION } from "../version.ts";
import type { ExecutorContext } from "./types.ts";
import { MANIFEST_TYPE, releaseEntries, thisPlatform, updateAgent } from "./update-agent.ts";

const run = promisify(execFile);

describe("update_agent", () => {
  let dir: string;
  let server: Server;
  let base: string;
  const files = new Map<string, Buffer>();
  const key = generateKeyPair();
  const keyId = keyIdOf(key.publicKey);
  let release: Buffer;
  let noEntry: Buffer;

  const tarball = async (name: string, entries: Record<string, string>) => {
    const src = path.join(dir, `src-${name}`);
    for (const [file, content] of Object.entries(entries)) {
      await mkdir(path.dirname(path.join(src, file)), { recursive: true });
      await writeFile(path.join(src, file), content);
      await chmod(path.join(src, file), 0o755);
    }
    const out = path.join(dir, `${name}.tgz`);
    await run("tar", ["-czf", out, "-C", src, "."]);
    return readFile(out);
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "redflag-update-"));
    release = await tarball("good", { "bin/redflag-agent": "#!/bin/sh\necho 0.2.0\n", "README.md": "release 0.2.0\n" });
    noEntry = await tarball("no-entry", { "README.md": "nothing to run\n" });
    files.set("/release.tgz", release);
    files.set("/no-entry.tgz", noEntry);
    files.set("/tampered.tgz", Buffer.concat([release.subarray(0, release.length - 1), Buffer.from([release.at(-1)! ^ 1])]));
    files.set("/bigger.tgz", Buffer.concat([release, Buffer.alloc(10)]));
    server = createServer((req, res) => {
      const body = files.get(req.url ?? "");
      if (!body) {
        res.writeHead(404).end("not found");
        return;
      }
      res.writeHead(200, { "content-type": "application/gzip" }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  const manifestFor = (bytes: Buffer, fields: { version?: string; platform?: string; size?: bigint } = {}) =>
    toBinary(
      ArtifactManifestSchema,
      create(ArtifactManifestSchema, {
        version: fields.version ?? "0.2.0",
        platform: fields.platform ?? "any",
        sizeBytes: fields.size ?? BigInt(bytes.length),
        sha256: new Uint8Array(createHash("sha256").update(bytes).digest()),
      }),
    );

  const attempt = async (opts: {
    url?: string;
    manifest?: Uint8Array;
    version?: string;
    signature?: Uint8Array;
    keyId?: string;
    installDir?: string | null;
    server?: { url: string; caFile: string | undefined } | null;
    onTrial?: boolean;
  } = {}) => {
    const manifest = opts.manifest ?? manifestFor(release);
    const installDir = opts.installDir === null ? undefined : (opts.installDir ?? (await mkdtemp(path.join(dir, "install-"))));
    let restart: string | undefined;
    const ctx: ExecutorContext = {
      command: create(CommandSchema, {
        id: "u-1",
        action: {
          case: "updateAgent",
          value: create(UpdateAgentSchema, {
            version: opts.version ?? "0.2.0",
            // As the control plane sends it: a path on itself.
            downloadUrl: opts.url ?? "release.tgz",
            manifest,
            manifestSignature: opts.signature ?? signEnvelope(key.secretKey, MANIFEST_TYPE, manifest),
            keyId: opts.keyId ?? keyId,
          }),
        },
      }),
      signal: new AbortController().signal,
      deadline: Date.now() + 30_000,
      agentConfig: undefined,
      aptRefresh: false,
      breakers: createBreakers(),
      locks: createSourceLocks(),
      heartbeat: createHeartbeat(),
      automatic: false,
      env: process.env,
      logger: silentLogger,
      pins: new Map([[keyId, key.publicKey]]),
      installDir,
      onTrial: opts.onTrial,
      server: opts.server === null ? undefined : (opts.server ?? { url: base, caFile: undefined }),
      requestRestart: (reason) => (restart = reason),
    };
    const outcome = await updateAgent(ctx);
    return { outcome, restart: () => restart, installDir };
  };

  it("verifies, unpacks beside the running release, records it for a trial and asks for a restart, leaving `current` alone", async () => {
    const installDir = await mkdtemp(path.join(dir, "install-"));
    await mkdir(path.join(installDir, "releases", AGENT_VERSION, "bin"), { recursive: true });
    await run("ln", ["-s", path.join("releases", AGENT_VERSION), path.join(installDir, "current")]);
    await writeFile(path.join(installDir, "upgrade-failed.json"), JSON.stringify({ version: "0.1.9", from: AGENT_VERSION, reason: "it did not start", at: "2026-01-01T00:00:00Z" }));
    const { outcome, restart } = await attempt({ installDir });
    expect(outcome).toEqual({
      outcome: CommandOutcome.SUCCEEDED,
      message: `installed version 0.2.0 beside ${AGENT_VERSION}; the agent restarts to try it and switches to it once it has completed a poll cycle (else it stays on ${AGENT_VERSION})`,
    });
    expect(restart()).toBe("installed 0.2.0; trying it");
    // `current` still points at the release that works; the next start tries the new one.
    expect(await readlink(path.join(installDir, "current"))).toBe(path.join("releases", AGENT_VERSION));
    expect(await readFile(path.join(installDir, "releases", "0.2.0", "bin", "redflag-agent"), "utf8")).toBe("#!/bin/sh\necho 0.2.0\n");
    expect(JSON.parse(await readFile(path.join(installDir, "upgrade.json"), "utf8"))).toMatchObject({ version: "0.2.0", from: AGENT_VERSION, starts: 0 });
    // A new attempt replaces the record of the last failure.
    expect((await readdir(installDir)).sort()).toEqual(["current", "releases", "upgrade.json"]);
    // The running release is untouched and no download or staging leftovers remain.
    expect((await readdir(path.join(installDir, "releases"))).sort()).toEqual([AGENT_VERSION, "0.2.0"].sort());
  });

  it("refuses while it is itself a release on trial", async () => {
    const result = await attempt({ onTrial: true });
    expect(result.outcome).toEqual({
      outcome: CommandOutcome.FAILED,
      message: `this agent (${AGENT_VERSION}) is itself a new release on trial; send update_agent again once it has been switched to`,
    });
    expect(await readdir(path.join(result.installDir!, "releases")).catch(() => [])).toEqual([]);
  });

  it.each([
    ["a manifest signed by a key this agent never pinned", () => ({ keyId: "feedfacefeedface" }), /^artifact manifest refused: unknown signing key feedfacefeedface$/],
    ["a manifest whose signature does not verify", () => ({ signature: new Uint8Array(64) }), /^artifact manifest refused: signature does not verify with pinned key/],
    [
      "a command signature passed off as a manifest signature",
      () => ({ signature: signEnvelope(key.secretKey, COMMAND_TYPE, manifestFor(release)) }),
      /^artifact manifest refused: signature does not verify/,
    ],
    ["a version other than the manifest's", () => ({ version: "0.3.0" }), /^the command asks for version 0\.3\.0 but the signed manifest is for 0\.2\.0$/],
    ["an artifact for another platform", () => ({ manifest: manifestFor(release, { platform: "win32-arm64" }) }), /^the artifact is built for win32-arm64; this agent runs on /],
    ["an artifact whose bytes differ from the manifest", () => ({ url: `${base}/tampered.tgz` }), /^the downloaded artifact does not match the signed manifest: SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}; nothing was installed$/],
    ["an artifact larger than the manifest says", () => ({ url: `${base}/bigger.tgz` }), /^the artifact is larger than the \d+ bytes the signed manifest says; nothing was installed$/],
    ["a missing artifact", () => ({ url: `${base}/gone.tgz` }), /^downloading http:\/\/127\.0\.0\.1:\d+\/gone\.tgz failed: HTTP 404$/],
    ["a release without the agent entry point", () => ({ url: `${base}/no-entry.tgz`, manifest: manifestFor(noEntry) }), /^the release has no bin\/redflag-agent; nothing was installed$/],
    ["an agent whose install directory is not managed", () => ({ installDir: null }), /REDFLAG_AGENT_INSTALL_DIR is not set/],
    ["a download URL that is not http(s)", () => ({ url: "file:///etc/passwd" }), /^download URL must be http\(s\), not file:$/],
    // The same bytes, served by the same process under another name: still another origin.
    [
      "a release from a server other than its control plane",
      () => ({ url: base.replace("127.0.0.1", "localhost") + "/release.tgz" }),
      /^refused: the release would be downloaded from http:\/\/localhost:\d+, not from this agent's control plane \(http:\/\/127\.0\.0\.1:\d+\); agent releases come only from its registry$/,
    ],
    ["a release URL with credentials in it", () => ({ url: base.replace("http://", "http://user:pw@") + "/release.tgz" }), /^refused: the release would be downloaded from/],
    ["an agent that does not know its control plane", () => ({ server: null }), /^this agent does not know its control plane's URL/],
  ] as [string, () => Parameters<typeof attempt>[0], RegExp][])("refuses %s and changes nothing", async (_, opts, message) => {
    const result = await attempt(opts());
    expect(result.outcome.outcome).toBe(CommandOutcome.FAILED);
    expect(result.outcome.message).toMatch(message);
    expect(result.restart()).toBeUndefined();
    if (result.installDir) {
      const entries = await readdir(result.installDir).catch(() => []);
      expect(entries.filter((e) => e !== "releases")).toEqual([]);
      expect(await readdir(path.join(result.installDir, "releases")).catch(() => [])).toEqual([]);
    }
  });

  it("resolves the registry's download path against the server URL, under a path prefix too", async () => {
    files.set("/redflag/downloads/any?version=0.2.0", release);
    const { outcome } = await attempt({ url: "downloads/any?version=0.2.0", server: { url: `${base}/redflag`, caFile: undefined } });
    expect(outcome.outcome, outcome.message).toBe(CommandOutcome.SUCCEEDED);
  });

  it("downloads over https with the CA the agent registered with, and refuses a server it cannot verify", async () => {
    const tls = path.join(dir, "tls");
    await mkdir(tls);
    await run("openssl", [
      "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", path.join(tls, "key.pem"), "-out", path.join(tls, "cert.pem"),
    ]);
    const secure = createHttpsServer({ key: await readFile(path.join(tls, "key.pem")), cert: await readFile(path.join(tls, "cert.pem")) }, (_req, res) => {
      res.writeHead(200).end(release);
    });
    await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
    try {
      const url = `https://127.0.0.1:${(secure.address() as AddressInfo).port}`;
      const trusted = await attempt({ server: { url, caFile: path.join(tls, "cert.pem") } });
      expect(trusted.outcome.outcome, trusted.outcome.message).toBe(CommandOutcome.SUCCEEDED);
      const untrusted = await attempt({ server: { url, caFile: undefined } });
      expect(untrusted.outcome).toMatchObject({ outcome: CommandOutcome.FAILED, message: expect.stringMatching(/^downloading https:\/\/127\.0\.0\.1:\d+\/release\.tgz failed: (DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)/) });
    } finally {
      await new Promise((resolve) => secure.close(resolve));
    }
  });

  it("does nothing when asked for the version it already runs", async () => {
    const manifest = manifestFor(release, { version: AGENT_VERSION });
    const result = await attempt({ manifest, version: AGENT_VERSION });
    expect(result.outcome).toEqual({ outcome: CommandOutcome.SUCCEEDED, message: `already running version ${AGENT_VERSION}; nothing to do` });
    expect(result.restart()).toBeUndefined();
  });

  it("names this host's platform as node does", () => {
    expect(thisPlatform()).toBe(`${process.platform}-${process.arch}`);
  });
});

describe("the file a release must hold", () => {
  it("is bin/redflag-agent, and on Windows the single-file build's bin/redflag-agent.exe too", () => {
    expect(releaseEntries("linux")).toEqual([path.join("bin", "redflag-agent")]);
    expect(releaseEntries("darwin")).toEqual([path.join("bin", "redflag-agent")]);
    expect(releaseEntries("win32")).toEqual([path.join("bin", "redflag-agent.exe"), path.join("bin", "redflag-agent")]);
  });
});
