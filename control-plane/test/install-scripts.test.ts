import http from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { createRequire } from "node:module";
import { Language, Parser, type Node } from "web-tree-sitter";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

const scripts = path.join(import.meta.dirname, "..", "install");

function get(cp: TestControlPlane, rawPath: string, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const url = new URL(cp.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: rawPath, method, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the install scripts the control plane serves", () => {
  let cp: TestControlPlane;
  let pub: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    pub = await startTestControlPlane({ REDFLAG_PUBLIC_URL: "https://redflag.example.com:8443/" });
  });
  afterAll(async () => {
    await cp?.close();
    await pub?.close();
  });

  it("serves linux.sh, macos.sh and windows.ps1 with the URL agents dial written in", async () => {
    const sh = await readFile(path.join(scripts, "install.sh"), "utf8");
    const ps1 = await readFile(path.join(scripts, "install.ps1"), "utf8");
    for (const name of ["linux.sh", "macos.sh"]) {
      const res = await get(cp, `/install/${name}`);
      expect(res.status).toBe(200);
      expect(res.headers).toMatchObject({ "content-type": "text/x-shellscript; charset=utf-8", "cache-control": "no-store" });
      expect(res.body).toBe(sh.replace("@@SERVER@@", cp.url));
      expect(res.body).toContain(`\nSERVER='${cp.url}'\n`);
    }
    const win = await get(cp, "/install/windows.ps1");
    expect(win.status).toBe(200);
    expect(win.body).toBe(ps1.replace("@@SERVER@@", cp.url));
    // REDFLAG_PUBLIC_URL wins over the address the request came to.
    expect((await get(pub, "/install/linux.sh")).body).toContain("\nSERVER='https://redflag.example.com:8443'\n");
    const head = await get(cp, "/install/linux.sh", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
  });

  it("takes the address the request came to, through a proxy too, and writes nothing unsafe into a script", async () => {
    const proxied = await get(cp, "/install/linux.sh", { "x-forwarded-host": "redflag.lan:8080", "x-forwarded-proto": "https" });
    expect(proxied.body).toContain("\nSERVER='https://redflag.lan:8080'\n");
    for (const host of ["evil'; rm -rf / #", "a b", "x$(id)", "x`id`", "h\\ost"]) {
      const res = await get(cp, "/install/linux.sh", { "x-forwarded-host": host });
      expect(res.status, host).toBe(400);
      expect(res.body).toMatch(/^cannot write http:\/\/.* into a script: set REDFLAG_PUBLIC_URL to the URL agents should use\n$/);
    }
  });

  it("answers other names and methods with what there is", async () => {
    const missing = await get(cp, "/install/freebsd.sh");
    expect(missing.status).toBe(404);
    expect(missing.body).toBe("no such install script; there are /install/linux.sh, /install/macos.sh, /install/windows.ps1\n");
    for (const p of ["/install/../install/linux.sh", "/install/%2e%2e/linux.sh", "/install/linux.sh/", "/install/"]) {
      expect((await get(cp, p)).status, p).toBe(404);
    }
    const post = await get(cp, "/install/linux.sh", {}, "POST");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
  });
});

// No PowerShell here (pwsh is in neither the npm registry nor Debian): windows.ps1 is checked
// with the tree-sitter PowerShell grammar instead, which marks what it cannot parse. The
// script's behaviour on Windows is reviewed by reading (agent/README.md, "Installing as a
// service"), not run.
describe("windows.ps1", () => {
  async function parseErrors(text: string): Promise<string[]> {
    await Parser.init();
    const wasm = createRequire(import.meta.url).resolve("tree-sitter-powershell/tree-sitter-powershell.wasm");
    const parser = new Parser();
    parser.setLanguage(await Language.load(wasm));
    const tree = parser.parse(text)!;
    const errors: string[] = [];
    const walk = (n: Node) => {
      if (n.isError || n.isMissing) errors.push(`${n.isMissing ? "missing" : "cannot parse"} at ${n.startPosition.row + 1}:${n.startPosition.column + 1}: ${n.text.slice(0, 60)}`);
      for (const c of n.children) if (c) walk(c);
    };
    walk(tree.rootNode);
    return errors;
  }

  it("parses as PowerShell, and the check finds a broken copy", async () => {
    const ps1 = await readFile(path.join(scripts, "install.ps1"), "utf8");
    expect(await parseErrors(ps1)).toEqual([]);
    expect(await parseErrors(ps1.replace("if ($fp -and $fp -notmatch", "if ($fp -and $fp -notmatch ("))).not.toEqual([]);
    expect(await parseErrors(ps1.replace(/\n\}\n$/, "\n"))).not.toEqual([]);
  });
});
