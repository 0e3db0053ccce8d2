import { create } from "@bufbuild/protobuf";
import { OsFamily, type OsInfo, OsInfoSchema } from "@redflag/gen/common_pb";
import { readFile } from "node:fs/promises";
import os from "node:os";

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

async function readOsRelease(): Promise<Record<string, string>> {
  for (const file of ["/etc/os-release", "/usr/lib/os-release"]) {
    try {
      return parseOsRelease(await readFile(file, "utf8"));
    } catch {
      // try the next location
    }
  }
  return {};
}

function osFamily(): OsFamily {
  switch (process.platform) {
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

export async function collectOsInfo(): Promise<OsInfo> {
  const release = await readOsRelease();
  return create(OsInfoSchema, {
    family: osFamily(),
    name: release.NAME ?? os.type(),
    version: release.VERSION ?? release.VERSION_ID ?? "",
    kernel: os.release(),
    arch: os.machine(),
  });
}

export function hostname(): string {
  return os.hostname();
}
