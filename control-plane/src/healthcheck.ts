// The Docker image's HEALTHCHECK: exits 0 when this machine's control plane answers /readyz
// (its database answers and its schema is current), 1 otherwise. It reads the same REDFLAG_*
// settings as the server, so it asks the port (and scheme) the server listens on.
import http from "node:http";
import https from "node:https";
import { loadConfig } from "./config.ts";

const TIMEOUT_MS = 4000;

export function probeUrl(config: { host: string; port: number; tls: unknown }): string {
  const wildcard = config.host === "0.0.0.0" || config.host === "::" || config.host === "";
  const host = wildcard ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host;
  return `${config.tls ? "https" : "http"}://${host}:${config.port}/readyz`;
}

// Asks this machine's control plane /readyz: its status and body. The certificate is the
// server's own, asked for on this machine: its name need not match.
export function askReady(url: string, timeoutMs = TIMEOUT_MS): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith("https:") ? (u: string, cb: (res: http.IncomingMessage) => void) => https.get(u, { rejectUnauthorized: false }, cb) : http.get;
    const req = get(url, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8").slice(0, 4096) }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

if (import.meta.main) {
  const url = probeUrl(loadConfig(process.env));
  askReady(url).then(
    ({ status }) => {
      if (status !== 200) process.stderr.write(`${url}: ${status}\n`);
      process.exit(status === 200 ? 0 : 1);
    },
    (err: Error) => {
      process.stderr.write(`${url}: ${err.message}\n`);
      process.exit(1);
    },
  );
}
