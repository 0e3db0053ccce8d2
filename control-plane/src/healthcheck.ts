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

if (import.meta.main) {
  const url = probeUrl(loadConfig(process.env));
  // The certificate is the server's own, asked for on this machine: its name need not match.
  const get = url.startsWith("https:") ? (u: string, cb: (res: http.IncomingMessage) => void) => https.get(u, { rejectUnauthorized: false }, cb) : http.get;
  const req = get(url, (res) => {
    res.resume();
    if (res.statusCode !== 200) process.stderr.write(`${url}: ${res.statusCode}\n`);
    process.exit(res.statusCode === 200 ? 0 : 1);
  });
  req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error("timed out")));
  req.on("error", (err) => {
    process.stderr.write(`${url}: ${err.message}\n`);
    process.exit(1);
  });
}
