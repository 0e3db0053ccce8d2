import { create } from "@bufbuild/protobuf";
import { OsFamily, type OsInfo, OsInfoSchema } from "@redflag/gen/common_pb";
import os from "node:os";
import { createHostAccess, toolOutput, type HostAccess } from "./platform.ts";

// Parses os-release(5): KEY=value lines, values optionally quoted, with shell escapes.
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!match) continue;
    let value = match[2]!;
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.endsWith(quote) && value.length >= 2) {
      value = value.slice(1, -1);
      if (quote === '"') value = value.replace(/\\(["\\$`])/g, "$1");
    }
    out[match[1]!] = value;
  }
  return out;
}

async function readOsRelease(host: HostAccess): Promise<Record<string, string>> {
  for (const file of ["/etc/os-release", "/usr/lib/os-release"]) {
    const text = await host.readText(file);
    if (text !== undefined) return parseOsRelease(text);
  }
  return {};
}

function osFamily(platform: NodeJS.Platform): OsFamily {
  switch (platform) {
    case "linux":
      return OsFamily.LINUX;
    case "win32":
      return OsFamily.WINDOWS;
    case "darwin":
      return OsFamily.DARWIN;
    default:
      return OsFamily.UNSPECIFIED;
  }
}

// Linux: os-release(5). macOS: "macOS" and sw_vers's product version (empty when it cannot be
// read). Windows: the product name Windows keeps in the registry (Node's os.version()) and the
// build number (os.release(), e.g. 10.0.22631), which tells Windows 10 from 11 where the product
// name does not.
export async function collectOsInfo(host: HostAccess = createHostAccess({})): Promise<OsInfo> {
  let name: string;
  let version: string;
  if (host.platform === "darwin") {
    const out = await toolOutput(host, [SW_VERS, "-productVersion"]);
    name = "macOS";
    version = "stdout" in out && /^\d+(\.\d+){0,2}$/.test(out.stdout.trim()) ? out.stdout.trim() : "";
  } else if (host.platform === "win32") {
    name = host.os.version() || "Windows";
    version = host.os.release();
  } else {
    const release = await readOsRelease(host);
    name = release.NAME ?? host.os.type();
    version = release.VERSION ?? release.VERSION_ID ?? "";
  }
  return create(OsInfoSchema, { family: osFamily(host.platform), name, version, kernel: host.os.release(), arch: host.os.machine() });
}

const SW_VERS = "/usr/bin/sw_vers";

export function hostname(): string {
  return os.hostname();
}
