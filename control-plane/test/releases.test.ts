import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ArtifactManifestSchema } from "@redflag/gen/command_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { type PublishReleaseRequest, PublishReleaseRequestSchema, ReleaseService } from "@redflag/gen/release_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compareVersions, isPlatform, isReleaseVersion, newestVersion } from "../src/domain/releases.ts";
import { parseRange } from "../src/http/downloads.ts";
import { MANIFEST_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { CHUNK_BYTES } from "../src/store/releases.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { freshDatabase, type FreshDatabase } from "./support/database.ts";

const PASSWORD = "a long enough passphrase 42";
const sha = (data: Uint8Array) => new Uint8Array(createHash("sha256").update(data).digest());

let cp: TestControlPlane;
let admin: Client<typeof ReleaseService>;
let operator: Client<typeof ReleaseService>;
let viewer: Client<typeof ReleaseService>;

const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });

beforeAll(async () => {
  cp = await startTestControlPlane();
  admin = createClient(ReleaseService, as(cp.adminKey));
  const users = createClient(UserService, as(cp.adminKey));
  await users.createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
  await users.createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER });
  const login = (username: string) => createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD });
  operator = createClient(ReleaseService, as((await login("oscar")).sessionToken));
  viewer = createClient(ReleaseService, as((await login("victor")).sessionToken));
});
afterAll(async () => {
  await cp?.close();
});

// The header, then the artifact in pieces of `piece` bytes (1 MiB like the CLI by default).
async function* stream(
  data: Uint8Array,
  header: { version: string; platform: string; sizeBytes?: bigint; sha256?: Uint8Array },
  piece = 1024 * 1024,
): AsyncGenerator<PublishReleaseRequest> {
  yield create(PublishReleaseRequestSchema, {
    part: { case: "header", value: { version: header.version, platform: header.platform, sizeBytes: header.sizeBytes ?? BigInt(data.length), sha256: header.sha256 ?? sha(data) } },
  });
  for (let i = 0; i < data.length; i += piece) yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: data.subarray(i, i + piece) } });
}

const publish = (client: Client<typeof ReleaseService>, data: Uint8Array, version: string, platform: string) =>
  client.publishRelease(stream(data, { version, platform }));

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

const stored = async () => ({
  releases: await cp.app.db.prisma.agentRelease.count(),
  chunks: await cp.app.db.prisma.agentReleaseChunk.count(),
});

// A plain HTTP request, the raw path sent as given (no normalisation of "..", no re-encoding).
function get(rawPath: string, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  const url = new URL(cp.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: rawPath, method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("release rules", () => {
  it("takes semantic versions and platform names only, bounded", () => {
    for (const v of ["0.2.0", "1.0.0-rc.1", "10.20.30+build.7", "1.0.0-alpha-beta.1"]) expect(isReleaseVersion(v), v).toBe(true);
    for (const v of ["", "1", "1.0", "01.0.0", "v1.0.0", "1.0.0-", "1.0.0/..", "../1.0.0", "1.0.0\n", "1.0.0 ", "1.0.0-rc..1", `1.0.0-${"a".repeat(64)}`, "1.0.0-ü"]) {
      expect(isReleaseVersion(v), JSON.stringify(v)).toBe(false);
    }
    for (const p of ["any", "linux-x64", "linux-arm64", "darwin-arm64", "win32-x64"]) expect(isPlatform(p), p).toBe(true);
    for (const p of ["", "linux", "Linux-x64", "linux-x64/..", "../etc", "linux_x64", "linux-x64-extra", "linux-x64\u0000", "%2e%2e", "a".repeat(40) + "-x64"]) {
      expect(isPlatform(p), JSON.stringify(p)).toBe(false);
    }
  });

  it("orders versions by semantic-versioning precedence", () => {
    expect(newestVersion(["0.9.0", "0.10.0", "0.10.0-rc.1", "0.2.0"])).toBe("0.10.0");
    expect(compareVersions("1.0.0-alpha", "1.0.0-alpha.1")).toBe(-1);
    expect(compareVersions("1.0.0-alpha.beta", "1.0.0-beta")).toBe(-1);
    expect(compareVersions("1.0.0-beta.11", "1.0.0-beta.2")).toBe(1);
    expect(compareVersions("1.0.0-rc.1", "1.0.0")).toBe(-1);
    expect(compareVersions("1.0.0+a", "1.0.0+b")).toBe(0);
    expect(newestVersion([])).toBeUndefined();
  });

  it("reads one byte range, and ignores what it does not serve", () => {
    expect(parseRange(undefined, 100)).toBe("all");
    expect(parseRange("bytes=0-9", 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=90-", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=95-1000", 100)).toEqual({ start: 95, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=9-0", 100)).toBe("all");
    expect(parseRange("bytes=0-1,5-6", 100)).toBe("all");
    expect(parseRange("items=0-1", 100)).toBe("all");
    expect(parseRange(`bytes=${"9".repeat(40)}-`, 100)).toBe("all");
  });
});

describe("the release registry", () => {
  // Larger than a few chunks, not a whole number of them.
  const artifact = new Uint8Array(randomBytes(3 * CHUNK_BYTES + 12_345));

  it("publishes a build streamed in pieces, stores it in bounded chunks, and lists it with a signed manifest", async () => {
    const res = await publish(admin, artifact, "0.2.0", "linux-x64");
    expect(res.created).toBe(true);
    expect(res.release).toMatchObject({ version: "0.2.0", platform: "linux-x64", sizeBytes: BigInt(artifact.length), publishedBy: "admin.key", downloadPath: "downloads/linux-x64?version=0.2.0" });
    const row = await cp.app.db.prisma.agentRelease.findUniqueOrThrow({ where: { version_platform: { version: "0.2.0", platform: "linux-x64" } }, include: { chunks: { select: { seq: true, data: true }, orderBy: { seq: "asc" } } } });
    expect(row.chunks.map((c) => c.data.length)).toEqual([CHUNK_BYTES, CHUNK_BYTES, CHUNK_BYTES, 12_345]);

    const listed = (await viewer.listReleases({})).releases;
    expect(listed.map((r) => `${r.version}/${r.platform}`)).toEqual(["0.2.0/linux-x64"]);
    const release = listed[0]!;
    expect(fromBinary(ArtifactManifestSchema, release.manifest)).toMatchObject({ version: "0.2.0", platform: "linux-x64", sizeBytes: BigInt(artifact.length), sha256: sha(artifact) });
    expect(release.keyId).toBe(cp.app.signer.activeKeyId);
    const key = cp.app.signer.trustedKeys().find((k) => k.keyId === release.keyId)!;
    expect(verifySignature(key.publicKey, MANIFEST_TYPE, release.manifest, release.manifestSignature)).toBe(true);

    const audit = await cp.app.db.prisma.auditEntry.findFirst({ where: { action: "redflag.v1.ReleaseService/PublishRelease" } });
    expect(audit).toMatchObject({ actorName: "admin.key", target: "release:0.2.0/linux-x64" });
    expect(audit?.after).toMatchObject({ version: "0.2.0", platform: "linux-x64", sha256: Buffer.from(sha(artifact)).toString("hex") });
  });

  it("keeps a build published again as it is, and never lets other bytes replace it", async () => {
    const before = await stored();
    const again = await publish(admin, artifact, "0.2.0", "linux-x64");
    expect(again.created).toBe(false);
    const other = new Uint8Array(randomBytes(1000));
    const err = await failure(publish(admin, other, "0.2.0", "linux-x64"));
    expect(Code[err.code]).toBe("FailedPrecondition");
    expect(err.rawMessage).toMatch(/^0\.2\.0 for linux-x64 is already published with another artifact \(SHA-256 [0-9a-f]{64}\); a published release never changes: delete it first with `redflag releases delete 0\.2\.0 --platform linux-x64`$/);
    expect(await stored()).toEqual(before);
  });

  it.each<[string, () => AsyncIterable<PublishReleaseRequest>, RegExp]>([
    ["a stream without a header", async function* () { yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: new Uint8Array(10) } }); }, /^the first message must carry the release header/],
    ["an empty stream", async function* () {}, /^the first message must carry the release header/],
    ["a version that climbs out of a path", () => stream(new Uint8Array(10), { version: "../../etc/passwd", platform: "any" }), /^header\.version "\.\.\/\.\.\/etc\/passwd" is not a release version/],
    ["a version with a slash", () => stream(new Uint8Array(10), { version: "1.0.0/../../x", platform: "any" }), /^header\.version .* is not a release version/],
    ["a version with a newline", () => stream(new Uint8Array(10), { version: "1.0.0\nx", platform: "any" }), /^header\.version .* is not a release version/],
    ["a version of 10,000 characters", () => stream(new Uint8Array(10), { version: "1.0.0-" + "a".repeat(10_000), platform: "any" }), /^header\.version "1\.0\.0-a{58}…" is not a release version/],
    ["a platform that climbs out of a path", () => stream(new Uint8Array(10), { version: "1.0.0", platform: "../linux-x64" }), /^header\.platform "\.\.\/linux-x64" is not a platform/],
    ["an encoded platform", () => stream(new Uint8Array(10), { version: "1.0.0", platform: "linux%2Fx64" }), /^header\.platform "linux%2Fx64" is not a platform/],
    ["an empty artifact", () => stream(new Uint8Array(0), { version: "1.0.0", platform: "any" }), /^header\.size_bytes must be from 1 to 536870912/],
    ["an artifact over 512 MiB", () => stream(new Uint8Array(10), { version: "1.0.0", platform: "any", sizeBytes: 512n * 1024n * 1024n + 1n }), /^header\.size_bytes must be from 1 to 536870912/],
    ["a hash that is not SHA-256", () => stream(new Uint8Array(10), { version: "1.0.0", platform: "any", sha256: new Uint8Array(20) }), /^header\.sha256 must be the 32-byte SHA-256/],
    ["more bytes than the header says", () => stream(new Uint8Array(2 * CHUNK_BYTES + 10), { version: "1.0.0", platform: "any", sizeBytes: BigInt(CHUNK_BYTES) }), /^the artifact is larger than header\.size_bytes \(524288\); nothing was published$/],
    ["fewer bytes than the header says", () => stream(new Uint8Array(CHUNK_BYTES + 10), { version: "1.0.0", platform: "any", sizeBytes: BigInt(3 * CHUNK_BYTES) }), /^the stream ended after 524298 of the 1572864 bytes header\.size_bytes announced; nothing was published$/],
    ["bytes that do not match the hash", () => stream(new Uint8Array(CHUNK_BYTES + 10), { version: "1.0.0", platform: "any", sha256: sha(new Uint8Array(5)) }), /^the artifact's SHA-256 is [0-9a-f]{64}, the header says [0-9a-f]{64}; nothing was published$/],
    [
      "a second header",
      async function* () {
        yield* stream(new Uint8Array(CHUNK_BYTES), { version: "1.0.0", platform: "any" });
        yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version: "1.0.1", platform: "any", sizeBytes: 1n, sha256: sha(new Uint8Array(1)) } } });
      },
      /^only the first message carries a header/,
    ],
    ["an empty piece", () => emptyPiece(), /^an empty chunk; send the artifact's bytes$/],
    ["a stream of tiny pieces", () => stream(new Uint8Array(4096), { version: "1.0.0", platform: "any" }, 16), /^a chunk smaller than 65536 bytes was followed by another; only the last may be that small$/],
    ["a piece over 4 MiB", () => stream(new Uint8Array(5 * 1024 * 1024), { version: "1.0.0", platform: "any" }, 5 * 1024 * 1024), /^a chunk of 5242880 bytes; at most 4194304 per message$/],
  ])("refuses %s with InvalidArgument and keeps nothing", async (_, requests, message) => {
    const before = await stored();
    const err = await failure(admin.publishRelease(requests()));
    expect(Code[err.code], err.rawMessage).toBe("InvalidArgument");
    expect(err.rawMessage).toMatch(message);
    expect(await stored()).toEqual(before);
  });

  it("lets only admins publish and delete; everyone signed in may list", async () => {
    const before = await stored();
    for (const client of [operator, viewer]) {
      const err = await failure(publish(client, new Uint8Array(100), "6.6.6", "any"));
      expect(Code[err.code]).toBe("PermissionDenied");
      expect(err.rawMessage).toMatch(/^PublishRelease needs the admin role; (oscar|victor) acts as (operator|viewer)$/);
      expect(Code[(await failure(client.deleteRelease({ version: "0.2.0", platform: "linux-x64" }))).code]).toBe("PermissionDenied");
    }
    const anonymous = createClient(ReleaseService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    expect(Code[(await failure(anonymous.listReleases({}))).code]).toBe("Unauthenticated");
    expect(Code[(await failure(publish(anonymous, new Uint8Array(100), "6.6.6", "any"))).code]).toBe("Unauthenticated");
    expect((await operator.listReleases({})).releases).toHaveLength(1);
    expect(await stored()).toEqual(before);
  });

  it("refuses a second upload of the same release while one runs, and drops an upload whose client went away", async () => {
    const data = new Uint8Array(randomBytes(2 * CHUNK_BYTES));
    const abort = new AbortController();
    let sent!: () => void;
    const firstPieceSent = new Promise<void>((resolve) => (sent = resolve));
    const slow = admin.publishRelease(
      (async function* () {
        const all = stream(data, { version: "3.0.0", platform: "any" }, CHUNK_BYTES);
        yield (await all.next()).value!;
        yield (await all.next()).value!;
        sent();
        // Never sends the rest: the client gives up.
        await new Promise((resolve) => abort.signal.addEventListener("abort", resolve));
      })(),
      { signal: abort.signal },
    );
    await firstPieceSent;
    await expect.poll(() => cp.app.db.prisma.agentReleaseChunk.count({ where: { release: { version: "3.0.0" } } })).toBe(1);
    const busy = await failure(publish(admin, data, "3.0.0", "any"));
    expect(Code[busy.code]).toBe("FailedPrecondition");
    expect(busy.rawMessage).toMatch(/^another upload of 3\.0\.0 for any is in progress \(started .* by admin\.key\); wait for it, or delete it with `redflag releases delete 3\.0\.0 --platform any`$/);
    abort.abort();
    await slow.catch(() => {});
    await expect.poll(() => cp.app.db.prisma.agentRelease.count({ where: { version: "3.0.0" } })).toBe(0);
    expect((await publish(admin, data, "3.0.0", "any")).created).toBe(true);
    await admin.deleteRelease({ version: "3.0.0", platform: "any" });
  });

  it("serves downloads, HEAD and byte ranges, with the hash in the headers", async () => {
    const full = await get("/downloads/linux-x64?version=0.2.0");
    expect(full.status).toBe(200);
    expect(Buffer.compare(full.body, Buffer.from(artifact))).toBe(0);
    expect(full.headers).toMatchObject({
      "content-type": "application/octet-stream",
      "content-length": String(artifact.length),
      "accept-ranges": "bytes",
      "x-redflag-version": "0.2.0",
      "x-redflag-platform": "linux-x64",
      "x-redflag-sha256": Buffer.from(sha(artifact)).toString("hex"),
      "content-disposition": 'attachment; filename="redflag-agent-0.2.0-linux-x64.tgz"',
    });
    // Without a version: the newest.
    expect((await get("/downloads/linux-x64")).headers["x-redflag-version"]).toBe("0.2.0");

    const head = await get("/downloads/linux-x64", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(artifact.length));
    expect(head.body.length).toBe(0);

    // A range across a chunk boundary, and the tail.
    const start = CHUNK_BYTES - 100;
    const part = await get("/downloads/linux-x64?version=0.2.0", { range: `bytes=${start}-${CHUNK_BYTES + 99}` });
    expect(part.status).toBe(206);
    expect(part.headers["content-range"]).toBe(`bytes ${start}-${CHUNK_BYTES + 99}/${artifact.length}`);
    expect(Buffer.compare(part.body, Buffer.from(artifact.subarray(start, CHUNK_BYTES + 100)))).toBe(0);
    const tail = await get("/downloads/linux-x64", { range: "bytes=-10" });
    expect(Buffer.compare(tail.body, Buffer.from(artifact.subarray(artifact.length - 10)))).toBe(0);
    const beyond = await get("/downloads/linux-x64", { range: `bytes=${artifact.length}-` });
    expect(beyond.status).toBe(416);
    expect(beyond.headers["content-range"]).toBe(`bytes */${artifact.length}`);

    const cached = await get("/downloads/linux-x64", { "if-none-match": full.headers.etag as string });
    expect(cached.status).toBe(304);
    expect(cached.body.length).toBe(0);
    // A range for another version of the file is ignored: the whole current one comes back.
    const stale = await get("/downloads/linux-x64", { range: "bytes=0-9", "if-range": '"0000"' });
    expect(stale.status).toBe(200);
    expect(stale.body.length).toBe(artifact.length);
  });

  it("serves the signed manifest as lines an install script reads, verifiable with the active key", async () => {
    const res = await get("/downloads/linux-x64/manifest?version=0.2.0");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/plain; charset=utf-8");
    const lines = Object.fromEntries(res.body.toString("utf8").trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    expect(Object.keys(lines)).toEqual(["version", "platform", "size", "sha256", "key_id", "public_key", "manifest", "signature"]);
    expect(lines).toMatchObject({ version: "0.2.0", platform: "linux-x64", size: String(artifact.length), sha256: Buffer.from(sha(artifact)).toString("hex"), key_id: cp.app.signer.activeKeyId });
    const manifest = Buffer.from(lines.manifest!, "base64");
    expect(fromBinary(ArtifactManifestSchema, manifest)).toMatchObject({ version: "0.2.0", platform: "linux-x64", sizeBytes: BigInt(artifact.length) });
    const key = cp.app.signer.trustedKeys().find((k) => k.keyId === cp.app.signer.activeKeyId)!;
    expect(Buffer.from(lines.public_key!, "base64").equals(Buffer.from(key.publicKey))).toBe(true);
    expect(verifySignature(key.publicKey, MANIFEST_TYPE, manifest, Buffer.from(lines.signature!, "base64"))).toBe(true);
    // The newest without a version; a 404 that says how to publish for a platform with none.
    expect((await get("/downloads/linux-x64/manifest")).body.toString()).toContain("version=0.2.0\n");
    const none = await get("/downloads/linux-riscv64/manifest");
    expect(none.status).toBe(404);
    expect(none.body.toString()).toBe("no agent release for linux-riscv64 is published; an admin publishes builds with `redflag releases publish DIR`\n");
  });

  it.each([
    "/downloads/manifest",
    "/downloads/../../etc/passwd/manifest",
    "/downloads/linux-x64/manifest/manifest",
    "/downloads/linux-x64/../manifest",
    "/downloads/linux-x64/manifest?version=../../etc/passwd",
    "/downloads/../etc/passwd",
    "/downloads/../../../../etc/passwd",
    "/downloads/%2e%2e/%2e%2e/etc/passwd",
    "/downloads/%2e%2e%2fetc%2fpasswd",
    "/downloads/%252e%252e%252fetc%252fpasswd",
    "/downloads/..%5c..%5cwindows%5cwin.ini",
    "/downloads/linux-x64/../../../etc/passwd",
    "/downloads/linux-x64/",
    "/downloads/linux-x64%00.tgz",
    "/downloads/linux-x64%2f..%2f..%2fetc%2fpasswd",
    "/downloads//etc/passwd",
    "/downloads/./linux-x64",
    "/downloads/LINUX-X64",
    "/downloads/linux-x64;.tgz",
    "/downloads/linux%C2%ADx64",
    `/downloads/${"a".repeat(5000)}-x64`,
    "/downloads/linux-x64?version=../../../etc/passwd",
    "/downloads/linux-x64?version=..%2f..%2fetc%2fpasswd",
    "/downloads/linux-x64?version=0.2.0%00",
    "/downloads/linux-x64?version=0.2.0&version=0.1.0",
    `/downloads/linux-x64?version=1.0.0-${"9".repeat(5000)}`,
    "/downloads",
    "/downloads/",
  ].map((p) => [p.length > 80 ? `${p.slice(0, 60)}… (${p.length} characters)` : p, p]))("answers %s with a 400 that says what to ask for, and no file", async (_, rawPath) => {
    const res = await get(rawPath);
    expect(res.status, res.body.toString()).toBe(400);
    expect(res.headers["content-type"]).toBe("text/plain; charset=utf-8");
    expect(res.body.toString()).toMatch(/^not a (platform|release version): ask for \/downloads\/<platform>\[\?version=<version>\]/);
    expect(res.body.toString()).not.toContain("root:");
  });

  it("answers a release that is not published with a 404 naming how to publish one, and other methods with a 405", async () => {
    const missing = await get("/downloads/linux-arm64?version=0.2.0");
    expect(missing.status).toBe(404);
    expect(missing.body.toString()).toBe("no agent release 0.2.0 for linux-arm64 is published; an admin publishes builds with `redflag releases publish DIR`\n");
    expect((await get("/downloads/linux-x64?version=9.9.9")).status).toBe(404);
    const post = await get("/downloads/linux-x64", {}, "POST");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
  });

  it("deletes a release with its artifact, audited; downloads of it end", async () => {
    await publish(admin, new Uint8Array(randomBytes(1000)), "0.3.0", "any");
    expect((await get("/downloads/any")).headers["x-redflag-version"]).toBe("0.3.0");
    expect(Code[(await failure(admin.deleteRelease({ version: "0.3.0", platform: "../any" }))).code]).toBe("InvalidArgument");
    expect(Code[(await failure(admin.deleteRelease({ version: "0.4.0", platform: "any" }))).code]).toBe("NotFound");
    await admin.deleteRelease({ version: "0.3.0", platform: "any" });
    expect((await get("/downloads/any")).status).toBe(404);
    expect(await cp.app.db.prisma.agentReleaseChunk.count({ where: { release: { platform: "any" } } })).toBe(0);
    const audit = await cp.app.db.prisma.auditEntry.findFirst({ where: { action: "redflag.v1.ReleaseService/DeleteRelease", target: "release:0.3.0/any" } });
    expect(audit).toMatchObject({ target: "release:0.3.0/any", before: expect.objectContaining({ version: "0.3.0", state: "published" }) });
  });
});

async function* emptyPiece(): AsyncGenerator<PublishReleaseRequest> {
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version: "1.0.0", platform: "any", sizeBytes: 5n, sha256: sha(new Uint8Array(5)) } } });
  yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: new Uint8Array(0) } });
}

// Replicas share the registry: it lives in PostgreSQL, not on any replica's disk.
describe.skipIf(!process.env.TEST_DATABASE_URL)("the release registry across two replicas on one PostgreSQL", () => {
  let db: FreshDatabase;
  const replicas: TestControlPlane[] = [];
  beforeAll(async () => {
    db = await freshDatabase({ backend: "postgres" });
    const env = { REDFLAG_MASTER_KEY: randomBytes(32).toString("base64") };
    replicas.push(await startTestControlPlane(env, { db, port: 0 }));
    replicas.push(await startTestControlPlane(env, { db, port: 0 }));
  });
  afterAll(async () => {
    for (const r of replicas) await r.app.close();
    await db?.cleanup();
  });

  it("serves on one replica what was published on the other, and forgets it everywhere when deleted", async () => {
    const [a, b] = replicas as [TestControlPlane, TestControlPlane];
    const client = (r: TestControlPlane) =>
      createClient(ReleaseService, createConnectTransport({ baseUrl: r.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${r.adminKey}` })] }));
    const data = new Uint8Array(randomBytes(CHUNK_BYTES + 777));
    await client(a).publishRelease(stream(data, { version: "4.0.0", platform: "linux-arm64" }));
    const fromB = await fetch(`${b.url}/downloads/linux-arm64?version=4.0.0`);
    expect(fromB.status).toBe(200);
    expect(Buffer.compare(Buffer.from(await fromB.arrayBuffer()), Buffer.from(data))).toBe(0);
    expect((await client(b).listReleases({})).releases.map((r) => r.version)).toEqual(["4.0.0"]);
    await client(b).deleteRelease({ version: "4.0.0", platform: "linux-arm64" });
    expect((await fetch(`${a.url}/downloads/linux-arm64`)).status).toBe(404);
  });
});
