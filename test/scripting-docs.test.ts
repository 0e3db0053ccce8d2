import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent } from "../control-plane/test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root } from "./support/processes.ts";

// docs/scripting.md as a user pastes it (issue 17): every block marked `<!-- run: NAME -->` runs
// in bash, as written, in an empty folder with the repository's proto/ beside it, against a real
// control plane: cleartext, and TLS with a certificate from a private CA. Python is Debian's
// (python3-grpcio, python3-grpc-tools, installed by .ci/run), buf is the repository's own.

const run = promisify(execFile);

async function blocks(): Promise<Map<string, string>> {
  const text = await readFile(path.join(root, "docs", "scripting.md"), "utf8");
  const out = new Map<string, string>();
  for (const m of text.matchAll(/<!-- run: ([\w-]+) -->\n```sh\n([\s\S]*?)\n```/g)) out.set(m[1]!, m[2]!);
  return out;
}

describe("docs/scripting.md, run as written", () => {
  let plain: TestControlPlane;
  let secure: TestControlPlane;
  let dir: string;
  let examples: Map<string, string>;

  beforeAll(async () => {
    examples = await blocks();
    dir = await mkdtemp(path.join(tmpdir(), "redflag-scripting-"));
    await symlink(path.join(root, "proto"), path.join(dir, "proto"));
    // A private CA and a server certificate it signed, for localhost.
    const ssl = (...args: string[]) => run("openssl", args, { cwd: dir });
    await ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=RedFlag test CA", "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
    await ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr");
    await writeFile(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    await ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", "cert.pem", "-extfile", "ext.cnf");

    plain = await startTestControlPlane();
    secure = await startTestControlPlane({ REDFLAG_TLS_CERT: path.join(dir, "cert.pem"), REDFLAG_TLS_KEY: path.join(dir, "key.pem") });
    // (The TLS one stays empty: the test's own clients speak cleartext.)
    await registerTestAgent(plain, await newRegistrationToken(plain), { hostname: "web-1" });
  }, 120_000);
  afterAll(async () => {
    await plain?.close();
    await secure?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const bash = async (name: string, env: Record<string, string>) => {
    const script = examples.get(name);
    if (!script) throw new Error(`docs/scripting.md has no block marked <!-- run: ${name} -->`);
    // Debian's python3 (where python3-grpcio is), the repository's buf.
    const PATH = [path.join(root, "node_modules", ".bin"), "/usr/bin", "/bin", process.env.PATH].join(":");
    const { stdout } = await run("bash", ["-euo", "pipefail", "-c", script], { cwd: dir, env: { ...process.env, PATH, ...env }, timeout: 60_000 });
    return stdout;
  };
  const cleartext = () => ({ REDFLAG_URL: plain.url, REDFLAG_TOKEN: plain.adminKey });
  const tls = () => ({ REDFLAG_URL: `https://localhost:${secure.app.server.port}`, REDFLAG_TOKEN: secure.adminKey, REDFLAG_CA: path.join(dir, "ca.pem") });

  it("curl with Connect JSON, by POST and by GET", async () => {
    expect(JSON.parse(await bash("curl", cleartext()))).toMatchObject({ agents: [{ hostname: "web-1" }] });
    expect(JSON.parse(await bash("curl-get", cleartext()))).toMatchObject({ agents: [{ hostname: "web-1" }] });
  });

  it("buf curl through reflection, and with the schema", async () => {
    const reflected = await bash("buf-curl-reflection", cleartext());
    expect(reflected).toContain('"hostname": "web-1"');
    expect(reflected).toContain("redflag.v1.FleetService/ListAgents\n");
    expect(JSON.parse(await bash("buf-curl-schema", cleartext()))).toMatchObject({ agents: [{ hostname: "web-1" }] });
  }, 60_000);

  it("Python with grpcio, in cleartext and over TLS with the private CA", async () => {
    expect(await bash("python", cleartext())).toMatch(/^[0-9a-f-]{36} web-1\n$/);
    // An empty fleet over TLS: nothing to print, and no error.
    expect(await bash("python", tls())).toBe("");
  }, 90_000);

  it("curl and buf curl over TLS with the private CA", async () => {
    // Two empty answers (the fleet there has no agents): `{}` from each.
    const out = await bash("tls", tls());
    expect(out.replace(/\s+/g, "")).toBe("{}{}");
  }, 60_000);
});
