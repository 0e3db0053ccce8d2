// GET/HEAD /downloads/<platform>[?version=<version>] (and …/manifest): agent releases from the registry, for
// update_agent and installers. Open to everyone (an agent binary is no secret; what makes it
// trusted is the signed manifest, checked by whoever installs it). The artifact streams from the
// database one chunk at a time, never whole in memory; Range requests resume a download.
//
// The path is never decoded or joined onto a file system path: the platform must be exactly one
// segment of the registry's platform shape ("linux-x64", "any"), the version a semantic
// version, and both only select a database row. Anything else is a 400 that says what to ask for.
import type http from "node:http";
import type http2 from "node:http2";
import { artifactFileName, isPlatform, isReleaseVersion, newestVersion } from "../domain/releases.ts";
import type { Logger } from "../log.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { findPublishedRelease, readChunk, type ReleaseRow } from "../store/releases.ts";
import type { Prisma } from "../store/types.ts";

type Request = Pick<http.IncomingMessage | http2.Http2ServerRequest, "url" | "method" | "headers">;
// What HTTP/1.1 and HTTP/2 (compatibility API) responses both offer.
interface Response {
  writeHead(status: number, headers: Record<string, string>): unknown;
  write(chunk: Uint8Array): boolean;
  end(): unknown;
  end(body: string): unknown;
  destroy(): unknown;
  readonly headersSent: boolean;
  once(event: "close" | "drain", listener: () => void): unknown;
  off(event: "close" | "drain", listener: () => void): unknown;
}

export interface DownloadDeps {
  db: Prisma;
  logger: Logger;
  // Signs a release's manifest with the active key for /downloads/<platform>/manifest.
  signer: Pick<CommandSigner, "activeKeyId" | "trustedKeys" | "signManifest">;
  // Downloads streaming at once on this replica; more wait for a turn.
  maxConcurrent?: number;
  // Downloads waiting for a turn; more are answered 503 with Retry-After.
  maxWaiting?: number;
}

export const DOWNLOADS_PREFIX = "/downloads";
const USAGE = "ask for /downloads/<platform>[?version=<version>] (the artifact) or /downloads/<platform>/manifest[?version=<version>] (its signed manifest), for example /downloads/linux-x64?version=0.2.0";
const MANIFEST_SUFFIX = "/manifest";


// The one byte range asked for: [start, end] inclusive; "all" when there is none or it is not
// one we serve (several ranges, a malformed header: RFC 9110 lets a server ignore it).
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | "all" | "unsatisfiable" {
  if (!header) return "all";
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return "all";
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== "" && Number(m[2]) < start) return "all";
  if (start >= size) return "unsatisfiable";
  return { start, end: m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1) };
}

// Turns for the streams; a waiter is let in as one ends.
function createTurns(max: number, maxWaiting: number) {
  let running = 0;
  const waiting: (() => void)[] = [];
  return {
    // Undefined when too many are waiting already.
    take(): Promise<() => void> | undefined {
      const release = () => {
        const next = waiting.shift();
        if (next) next();
        else running--;
      };
      if (running < max) {
        running++;
        return Promise.resolve(once(release));
      }
      if (waiting.length >= maxWaiting) return undefined;
      return new Promise((resolve) => waiting.push(() => resolve(once(release))));
    },
  };
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}

export function createDownloads(deps: DownloadDeps) {
  const turns = createTurns(deps.maxConcurrent ?? 32, deps.maxWaiting ?? 1024);

  const plain = (res: Response, status: number, text: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers });
    res.end(`${text}\n`);
  };

  // The release's manifest signed now with the active key, as key=value lines a POSIX shell
  // reads (the install scripts check the key against the fingerprint they were given, the
  // signature with openssl, and the artifact against the manifest).
  function serveManifest(res: Response, release: ReleaseRow): void {
    const { manifestSignature, keyId } = deps.signer.signManifest(release.manifest);
    const key = deps.signer.trustedKeys().find((k) => k.keyId === keyId);
    if (!key) throw new Error("the active signing key is not among the trusted keys");
    const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
    plain(
      res,
      200,
      [
        `version=${release.version}`,
        `platform=${release.platform}`,
        `size=${release.sizeBytes}`,
        `sha256=${Buffer.from(release.sha256).toString("hex")}`,
        `key_id=${keyId}`,
        `public_key=${b64(key.publicKey)}`,
        `manifest=${b64(release.manifest)}`,
        `signature=${b64(manifestSignature)}`,
      ].join("\n"),
    );
  }

  async function serve(req: Request, res: Response, platform: string, version: string | undefined, manifest: boolean): Promise<void> {
    const release = await findPublishedRelease(deps.db, platform, version, newestVersion);
    if (!release) {
      const which = version ? `${version} for ${platform}` : `for ${platform}`;
      return plain(res, 404, `no agent release ${which} is published; an admin publishes builds with \`redflag releases publish DIR\``);
    }
    if (manifest) return serveManifest(res, release);
    const size = Number(release.sizeBytes);
    const etag = `"${Buffer.from(release.sha256).toString("hex")}"`;
    const headers: Record<string, string> = {
      "content-type": "application/octet-stream",
      "content-disposition": `attachment; filename="${artifactFileName(release.version, release.platform)}"`,
      "accept-ranges": "bytes",
      etag,
      // A version can be deleted and published again with other bytes: always revalidate.
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
      "x-redflag-version": release.version,
      "x-redflag-platform": release.platform,
      "x-redflag-sha256": Buffer.from(release.sha256).toString("hex"),
    };
    const ifNoneMatch = req.headers["if-none-match"];
    if (typeof ifNoneMatch === "string" && ifNoneMatch.split(",").some((t) => t.trim() === etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const ifRange = req.headers["if-range"];
    const rangeHeader = typeof ifRange === "string" && ifRange.trim() !== etag ? undefined : req.headers.range;
    const range = parseRange(typeof rangeHeader === "string" ? rangeHeader : undefined, size);
    if (range === "unsatisfiable") return plain(res, 416, `the artifact has ${size} bytes`, { "content-range": `bytes */${size}` });
    const { start, end } = range === "all" ? { start: 0, end: size - 1 } : range;
    const status = range === "all" ? 200 : 206;
    res.writeHead(status, {
      ...headers,
      "content-length": String(end - start + 1),
      ...(status === 206 ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    await stream(res, release, start, end);
  }

  // Writes bytes [start, end] of the artifact, one chunk read at a time, waiting for the client
  // to take each before reading the next.
  async function stream(res: Response, release: ReleaseRow, start: number, end: number): Promise<void> {
    let closed = false;
    res.once("close", () => (closed = true));
    for (let seq = Math.floor(start / release.chunkBytes); seq * release.chunkBytes <= end && !closed; seq++) {
      const data = await readChunk(deps.db, release.id, seq);
      if (!data) {
        // Deleted while it streamed: the client sees a short body, never other bytes.
        deps.logger.warn({ version: release.version, platform: release.platform, seq }, "an agent release was deleted while it was downloaded");
        res.destroy();
        return;
      }
      const offset = seq * release.chunkBytes;
      const piece = Buffer.from(data.buffer, data.byteOffset, data.byteLength).subarray(Math.max(0, start - offset), end - offset + 1);
      if (!res.write(piece)) await drained(res);
    }
    if (!closed) res.end();
  }

  return {
    // Answers the downloads routes; false for any other request.
    handle(req: Request, res: Response): boolean {
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const pathname = q < 0 ? url : url.slice(0, q);
      if (pathname !== DOWNLOADS_PREFIX && !pathname.startsWith(`${DOWNLOADS_PREFIX}/`)) return false;
      if (req.method !== "GET" && req.method !== "HEAD") {
        plain(res, 405, "downloads are read with GET or HEAD", { allow: "GET, HEAD" });
        return true;
      }
      const manifest = pathname.endsWith(MANIFEST_SUFFIX);
      const platform = pathname.slice(DOWNLOADS_PREFIX.length + 1, manifest ? -MANIFEST_SUFFIX.length : undefined);
      if (!isPlatform(platform)) {
        plain(res, 400, `not a platform: ${USAGE}; platforms are "any" or an OS and CPU like linux-x64, linux-arm64, darwin-arm64, win32-x64`);
        return true;
      }
      const params = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
      const versions = params.getAll("version");
      if (versions.length > 1 || (versions.length === 1 && !isReleaseVersion(versions[0]!))) {
        plain(res, 400, `not a release version: ${USAGE}; versions are semantic versions like 0.2.0 or 1.0.0-rc.1`);
        return true;
      }
      const turn = turns.take();
      if (!turn) {
        plain(res, 503, "too many downloads at once; try again shortly", { "retry-after": "30" });
        return true;
      }
      let gone = false;
      res.once("close", () => (gone = true));
      void turn.then(async (release) => {
        try {
          if (gone) return;
          await serve(req, res, platform, versions[0], manifest);
        } catch (err) {
          deps.logger.warn({ err, platform, version: versions[0] }, "cannot serve an agent release download");
          if (!res.headersSent) plain(res, 503, "the release cannot be read right now; try again shortly", { "retry-after": "10" });
          else res.destroy();
        } finally {
          release();
        }
      });
      return true;
    },
  };
}

function drained(res: Response): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}
