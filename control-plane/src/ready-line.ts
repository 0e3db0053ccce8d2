import { existsSync } from "node:fs";
import { networkInterfaces } from "node:os";

// The one plain line start-up prints for a person (on stderr, apart from the JSON logs on
// stdout): where to open RedFlag, and on a first start that this is where the first admin is
// made. The address is one other machines can use: REDFLAG_PUBLIC_URL when it is set, else the
// address the server listens on, or for a wildcard address (0.0.0.0, ::) this machine's first
// LAN address; in a container, whose own address is not what people reach, the Docker host.

export interface ReadyLineInput {
  publicUrl: string | undefined;
  // What REDFLAG_ADDR asked for, and the port actually bound (REDFLAG_ADDR may say port 0).
  host: string;
  port: number;
  tls: boolean;
  // No person exists yet: the console opens on the setup wizard.
  setupRequired: boolean;
  // The bootstrap admin key's file, while the key works and the file is there.
  adminKeyFile: string | undefined;
  // For tests; default: this machine's.
  interfaces?: ReturnType<typeof networkInterfaces>;
  inContainer?: boolean;
}

const WILDCARDS = new Set(["0.0.0.0", "::", "[::]", ""]);

// A container image leaves one of these behind (Docker, Podman).
export const runningInContainer = () => existsSync("/.dockerenv") || existsSync("/run/.containerenv");

// This machine's first IPv4 address that is not loopback or link-local, as other machines on
// the network reach it; undefined when it has none.
export function lanAddress(interfaces = networkInterfaces()): string | undefined {
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) {
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("169.254.")) return a.address;
    }
  }
  return undefined;
}

export function readyLine(input: ReadyLineInput): string {
  const scheme = input.tls ? "https" : "http";
  let url: string;
  let where = "";
  if (input.publicUrl) {
    url = input.publicUrl;
  } else if (!WILDCARDS.has(input.host)) {
    url = `${scheme}://${input.host.includes(":") ? `[${input.host}]` : input.host}:${input.port}`;
  } else if (input.inContainer ?? runningInContainer()) {
    // The port published on the Docker host is the same one in compose.yaml.
    url = `${scheme}://localhost:${input.port}`;
    where = " on the Docker host";
  } else {
    url = `${scheme}://${lanAddress(input.interfaces) ?? "127.0.0.1"}:${input.port}`;
  }
  if (!input.setupRequired) return `RedFlag is ready: ${url}${where}`;
  const key = input.adminKeyFile ? `; scripts can use the admin API key in ${input.adminKeyFile}` : "";
  return `RedFlag is ready: open ${url}${where} to create the first admin${key}`;
}
