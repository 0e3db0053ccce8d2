// GET/HEAD /install/linux.sh, /install/macos.sh, /install/windows.ps1: the agent installers,
// with this control plane's URL filled in (REDFLAG_PUBLIC_URL, else the address the request
// came to, as the install commands print it). Open to everyone: the scripts hold no secret; the
// token and the signing-key fingerprint come with the pasted command line.
import { readFileSync } from "node:fs";
import type http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { agentServerUrl } from "../domain/enrolment.ts";

type Request = Pick<http.IncomingMessage | http2.Http2ServerRequest, "url" | "method" | "headers">;
interface Response {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(): unknown;
  end(body: string): unknown;
}

export const INSTALL_PREFIX = "/install/";
const SCRIPTS_DIR = path.join(import.meta.dirname, "..", "..", "install");
const PLACEHOLDER = "@@SERVER@@";

// The scripts, read once: the POSIX shell one serves Linux and macOS (it tells them apart).
function loadScripts(): Map<string, { text: string; type: string }> {
  const sh = readFileSync(path.join(SCRIPTS_DIR, "install.sh"), "utf8");
  const ps1 = readFileSync(path.join(SCRIPTS_DIR, "install.ps1"), "utf8");
  const shell = "text/x-shellscript; charset=utf-8";
  return new Map([
    ["linux.sh", { text: sh, type: shell }],
    ["macos.sh", { text: sh, type: shell }],
    ["windows.ps1", { text: ps1, type: "text/plain; charset=utf-8" }],
  ]);
}

// A URL that goes into a single-quoted string of sh and PowerShell as it is: scheme, host
// (name, IPv4 or bracketed IPv6), port, path; no quotes, spaces or shell characters.
const SAFE_URL = /^https?:\/\/[A-Za-z0-9.\-_[\]:]{1,255}(?:\/[A-Za-z0-9.\-_~/]{0,200})?$/;

export function createInstallScripts(deps: { publicUrl: string | undefined; tls: boolean }) {
  const scripts = loadScripts();
  const plain = (res: Response, status: number, text: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers });
    res.end(`${text}\n`);
  };
  return {
    // Answers /install/*; false for any other request.
    handle(req: Request, res: Response): boolean {
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const pathname = q < 0 ? url : url.slice(0, q);
      if (!pathname.startsWith(INSTALL_PREFIX)) return false;
      if (req.method !== "GET" && req.method !== "HEAD") {
        plain(res, 405, "install scripts are read with GET or HEAD", { allow: "GET, HEAD" });
        return true;
      }
      const script = scripts.get(pathname.slice(INSTALL_PREFIX.length));
      if (!script) {
        plain(res, 404, `no such install script; there are ${[...scripts.keys()].map((k) => `${INSTALL_PREFIX}${k}`).join(", ")}`);
        return true;
      }
      const header = (name: string) => {
        const value = req.headers[name];
        return typeof value === "string" ? value : null;
      };
      const server = agentServerUrl({ requestHeader: { get: header }, url: deps.tls ? "https://host/" : "http://host/" }, deps.publicUrl);
      if (!SAFE_URL.test(server)) {
        plain(res, 400, `cannot write ${server.slice(0, 300)} into a script: set REDFLAG_PUBLIC_URL to the URL agents should use`);
        return true;
      }
      const body = script.text.replaceAll(PLACEHOLDER, server);
      res.writeHead(200, {
        "content-type": script.type,
        "content-length": String(Buffer.byteLength(body)),
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      });
      if (req.method === "HEAD") res.end();
      else res.end(body);
      return true;
    },
  };
}
