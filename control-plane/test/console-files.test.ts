import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// A built console as the control plane serves it: its pages (the single-page app's index.html
// for every route), its static files (the favicon from console/static), and a real 404 page for
// anything else. test/docker-image.test.ts serves the real build; test/start-up.test.ts the
// missing one.
describe("serving a built console", () => {
  let dir: string;
  let cp: TestControlPlane;
  const logs: Record<string, unknown>[] = [];
  const favicon = path.resolve(import.meta.dirname, "..", "..", "console", "static", "favicon.ico");

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-console-build-"));
    await writeFile(path.join(dir, "index.html"), "<!doctype html><title>RedFlag</title>\n");
    await writeFile(path.join(dir, "favicon.ico"), await readFile(favicon));
    await mkdir(path.join(dir, "_app", "immutable"), { recursive: true });
    await writeFile(path.join(dir, "_app", "immutable", "app.1234.js"), "export {};\n");
    cp = await startTestControlPlane({ REDFLAG_CONSOLE_DIR: dir }, undefined, (l) => logs.push(l));
  });
  afterAll(async () => {
    await cp?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers every console route with its index.html, and logs no warning", async () => {
    for (const page of ["/", "/agents", "/agents/0b5f6a8e", "/settings"]) {
      const res = await fetch(`${cp.url}${page}`);
      expect(res.status, page).toBe(200);
      expect(await res.text()).toContain("<title>RedFlag</title>");
    }
    expect(logs.filter((l) => String(l.msg).includes("console is not built"))).toEqual([]);
  });

  it("serves the favicon, a red flag in a real icon file", async () => {
    const res = await fetch(`${cp.url}/favicon.ico`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/x-icon");
    const icon = Buffer.from(await res.arrayBuffer());
    // ICONDIR: reserved 0, type 1 (icon), one image of 32 × 32 pixels.
    expect([icon.readUInt16LE(0), icon.readUInt16LE(2), icon.readUInt16LE(4), icon[6], icon[7]]).toEqual([0, 1, 1, 32, 32]);
  });

  it("answers files that are not there with a 404 page, not the console", async () => {
    for (const missing of ["/wp-login.php", "/missing.html", "/_app/immutable/gone.js"]) {
      const res = await fetch(`${cp.url}${missing}`, { headers: { accept: "text/html" } });
      expect(res.status, missing).toBe(404);
      const html = await res.text();
      expect(html).toContain(`There is nothing at ${missing} on this RedFlag server.`);
      expect(html).toContain("The web console is at /.");
    }
  });
});
