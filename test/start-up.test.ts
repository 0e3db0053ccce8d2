import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshDatabase, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { run, startServerProcess, type ServerProcess } from "./support/processes.ts";

// Issue 14, "the first ten minutes": what a person sees when the control plane starts, as its
// own process. A port already taken is one sentence before anything else happens; a start says
// in one plain line where to open RedFlag; a control plane without its console says how to
// build it instead of answering "not found".

const until = async (what: () => boolean, label: () => string) => {
  for (let i = 0; !what(); i++) {
    if (i > 100) throw new Error(label());
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe("a port already in use", () => {
  let holder: net.Server;
  let dataDir: string;
  beforeAll(async () => {
    holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    dataDir = await mkdtemp(path.join(tmpdir(), "rf-port-"));
  });
  afterAll(async () => {
    await new Promise((r) => holder.close(r));
    await rm(dataDir, { recursive: true, force: true });
  });

  it("is one line naming REDFLAG_ADDR and its value, exit code 1, before the database starts", async () => {
    const { port } = holder.address() as net.AddressInfo;
    const res = await run(["control-plane/src/main.ts"], { env: { REDFLAG_ADDR: `127.0.0.1:${port}`, REDFLAG_DATA_DIR: path.join(dataDir, "data") } });
    expect(res.code).toBe(1);
    expect(res.stderr).toBe(
      `redflag-server: REDFLAG_ADDR=127.0.0.1:${port}: port ${port} is already in use by another program (another RedFlag?); stop it, or set REDFLAG_ADDR to a free port, for example REDFLAG_ADDR=127.0.0.1:8080\n`,
    );
    // No JSON log, no stack trace, and no database: the data directory was never made.
    expect(res.stdout).toBe("");
    expect(await readdir(dataDir)).toEqual([]);
  });
});

describe("a TLS certificate that cannot be read", () => {
  it("is one line naming the file and the settings, exit code 1", async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), "rf-tls-"));
    try {
      const cert = path.join(dataDir, "missing-cert.pem");
      const res = await run(["control-plane/src/main.ts"], {
        env: { REDFLAG_ADDR: "127.0.0.1:0", REDFLAG_DATA_DIR: path.join(dataDir, "data"), REDFLAG_TLS_CERT: cert, REDFLAG_TLS_KEY: path.join(dataDir, "missing-key.pem") },
      });
      expect(res.code).toBe(1);
      expect(res.stderr).toBe(`redflag-server: cannot read ${cert} (ENOENT); check REDFLAG_TLS_CERT and REDFLAG_TLS_KEY\n`);
      expect(res.stdout).toBe("");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("starting without a console build", () => {
  let db: FreshDatabase;
  let server: ServerProcess;
  let consoleDir: string;
  const stderr = () => server.logs.filter((l) => !l.startsWith("{")).join("");
  beforeAll(async () => {
    db = await freshDatabase();
    consoleDir = path.join(db.dataDir, "no-console-here");
    const env = { REDFLAG_DATA_DIR: db.dataDir, REDFLAG_CONSOLE_DIR: consoleDir, ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}) };
    server = await startServerProcess(env);
    await until(() => stderr().includes("RedFlag is ready"), () => `no ready line:\n${server.logs.join("")}`);
  });
  afterAll(async () => {
    await server?.stop();
    await db?.cleanup();
  });

  it("prints one plain line: where to open it to create the first admin, and the admin key's file", () => {
    const port = new URL(server.url).port;
    const lines = stderr().split("\n").filter((l) => l.startsWith("RedFlag"));
    expect(lines).toEqual([`RedFlag is ready: open http://127.0.0.1:${port} to create the first admin; scripts can use the admin API key in ${path.join(db.dataDir, "admin.key")}`]);
  });

  it("logs one warning that the console is not built", () => {
    const warnings = server.logs.flatMap((l) => l.split("\n")).filter((l) => l.includes("the web console is not built"));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 40, consoleDir });
    expect(warnings[0]).toContain("npm run build:console");
  });

  it("answers / and every console page with a page saying how to build the console", async () => {
    for (const page of ["/", "/agents", "/setup", "/agents/0b5f6a8e/updates", "/index.html"]) {
      const res = await fetch(`${server.url}${page}`, { headers: { accept: "text/html" } });
      expect(res.status, page).toBe(503);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      const html = await res.text();
      expect(html).toContain("<h1>The RedFlag console is not built</h1>");
      expect(html).toContain("<code>npm run build:console</code>");
      expect(html).toContain("Docker image");
    }
    const curl = await fetch(server.url);
    expect(curl.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(await curl.text()).toMatch(/^The RedFlag console is not built\n.*npm run build:console/s);
  });

  it("answers other unknown paths with a 404 page that points to the console, its input escaped", async () => {
    const res = await fetch(`${server.url}/wp-login.php?x=1`, { headers: { accept: "text/html,application/xhtml+xml" } });
    expect(res.status).toBe(404);
    const html = await res.text();
    expect(html).toContain("<h1>Not found</h1>");
    expect(html).toContain("There is nothing at /wp-login.php on this RedFlag server.");
    expect(html).toContain("The web console is at /.");
    const hostile = await fetch(`${server.url}/%3Cscript%3Ealert(1)%3C%2Fscript%3E.js`, { headers: { accept: "text/html" } });
    expect(hostile.status).toBe(404);
    expect(await hostile.text()).not.toContain("<script>");
    const favicon = await fetch(`${server.url}/favicon.ico`);
    expect(favicon.status).toBe(404);
    expect(await favicon.text()).toBe("Not found\nThere is nothing at /favicon.ico on this RedFlag server.\nThe web console is at /.\n");
    // The API, the probes and the downloads keep their own answers.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/downloads/linux-x64`)).status).toBe(404);
  });

  it("says only where it is once the first admin exists, and names REDFLAG_PUBLIC_URL when it is set", async () => {
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    await auth.setup({ username: "first", password: "a long enough passphrase" });
    await server.stop();
    const env = { REDFLAG_DATA_DIR: db.dataDir, REDFLAG_CONSOLE_DIR: consoleDir, ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}) };
    server = await startServerProcess(env);
    await until(() => stderr().includes("RedFlag is ready"), () => `no ready line:\n${server.logs.join("")}`);
    expect(stderr()).toContain(`RedFlag is ready: http://127.0.0.1:${new URL(server.url).port}\n`);
    await server.stop();
    server = await startServerProcess({ ...env, REDFLAG_PUBLIC_URL: "https://redflag.example.com/" });
    await until(() => stderr().includes("RedFlag is ready"), () => `no ready line:\n${server.logs.join("")}`);
    expect(stderr()).toContain("RedFlag is ready: https://redflag.example.com\n");
  });
});
