import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { describeFailure, which, type ProcessResult } from "../run-process.ts";
import { scanSession, severityFromWord } from "./common.ts";
import type { Scanner, ScanOptions, ScanResult } from "./types.ts";

export const WINDOWS_UPDATE = "windows_update";

// Searches through the Windows Update Agent COM API and prints one JSON object. Wrapping the
// list in an object keeps it an array whether it has zero, one or many entries; a COM error
// goes to stderr as "0xHRESULT message" with exit status 1.
export const SEARCH_SCRIPT = String.raw`
$ErrorActionPreference = 'Stop'
try {
  $session = New-Object -ComObject Microsoft.Update.Session
  $session.ClientApplicationID = 'RedFlag'
  $searcher = $session.CreateUpdateSearcher()
  $result = $searcher.Search("IsInstalled=0 and IsHidden=0 and Type='Software'")
  $items = @(foreach ($u in $result.Updates) {
    [pscustomobject]@{
      Title = $u.Title
      KBArticleIDs = @($u.KBArticleIDs)
      UpdateID = $u.Identity.UpdateID
      RevisionNumber = $u.Identity.RevisionNumber
      MsrcSeverity = $u.MsrcSeverity
      MaxDownloadSize = [int64]$u.MaxDownloadSize
      RebootBehavior = $u.InstallationBehavior.RebootBehavior
      Categories = @(foreach ($c in $u.Categories) { $c.Name })
    }
  })
  $reboot = (New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
  [pscustomobject]@{ Updates = $items; RebootRequired = $reboot } | ConvertTo-Json -Depth 4 -Compress
} catch {
  [Console]::Error.WriteLine(('0x{0:X8} {1}' -f $_.Exception.HResult, $_.Exception.Message))
  exit 1
}
`;

export interface WuUpdate {
  title: string;
  kb: string[];
  updateId: string;
  revision: number;
  msrcSeverity: string;
  maxDownloadSize: number;
  rebootBehavior: number;
  categories: string[];
}

const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === null || v === undefined || v === "" ? [] : [v]);

export function parseSearch(text: string): { updates: WuUpdate[]; rebootRequired: boolean } {
  const data = JSON.parse(text.trim() || "{}") as { Updates?: unknown; RebootRequired?: unknown };
  const updates: WuUpdate[] = [];
  // Windows PowerShell 5.1 turns a one-element array into an object when piped; accept both.
  for (const raw of asArray(data.Updates) as Record<string, unknown>[]) {
    if (!raw || typeof raw.UpdateID !== "string") continue;
    updates.push({
      title: String(raw.Title ?? ""),
      kb: asArray(raw.KBArticleIDs).map(String).filter(Boolean),
      updateId: raw.UpdateID,
      revision: Number(raw.RevisionNumber ?? 0),
      msrcSeverity: typeof raw.MsrcSeverity === "string" ? raw.MsrcSeverity : "",
      maxDownloadSize: Number(raw.MaxDownloadSize ?? 0),
      rebootBehavior: Number(raw.RebootBehavior ?? 0),
      categories: asArray(raw.Categories).map(String),
    });
  }
  return { updates, rebootRequired: data.RebootRequired === true };
}

// The name operators know an update by: its KB article, else the UpdateID.
export const wuName = (u: WuUpdate) => (u.kb[0] ? `KB${u.kb[0].replace(/^KB/i, "")}` : u.updateId);

export function toWindowsUpdate(u: WuUpdate): PackageUpdate {
  const severity = severityFromWord(u.msrcSeverity);
  const security = u.categories.includes("Security Updates") || u.categories.includes("Critical Updates") || severity !== UpdateSeverity.UNKNOWN;
  return create(PackageUpdateSchema, {
    source: WINDOWS_UPDATE,
    name: wuName(u),
    currentVersion: "",
    availableVersion: `${u.updateId}.${u.revision}`,
    architecture: "",
    repository: u.categories[0] ?? "Windows Update",
    severity: severity === UpdateSeverity.UNKNOWN && security ? UpdateSeverity.SECURITY : severity,
    security,
    sizeBytes: BigInt(Math.max(0, Math.round(u.maxDownloadSize))),
    // 1: always needs a reboot; 2: can ask for one.
    rebootRequired: u.rebootBehavior !== 0,
  });
}

// Windows Update Agent errors people meet, by HRESULT.
const WU_ERRORS: Record<string, string> = {
  "0x8024402C": "cannot reach Windows Update (the host name does not resolve; check network and proxy)",
  "0x80072EE2": "Windows Update did not answer in time (network)",
  "0x80072EFD": "cannot connect to Windows Update (network)",
  "0x80070422": "the Windows Update service is disabled",
  "0x8024001E": "Windows Update is shutting down or restarting",
  "0x80240438": "Windows Update is blocked by policy or cannot reach its service",
  "0x80244022": "the update service is unavailable (HTTP 503)",
  "0x80070005": "access denied; the agent must run as SYSTEM or an administrator",
};

export function wuFailure(what: string, result: ProcessResult): string {
  const m = /^(0x[0-9A-Fa-f]{8})\s*(.*)$/m.exec(result.stderr.trim());
  if (m && result.exitCode !== null) {
    const code = m[1]!.toUpperCase().replace("0X", "0x");
    const known = WU_ERRORS[code];
    return `${what} failed (${code}${known ? `: ${known}` : ""})${m[2] ? `: ${m[2].slice(0, 200)}` : ""}`;
  }
  return describeFailure(what, result);
}

export async function findPowerShell(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const path = env.PATH ?? "";
  return (await which("powershell.exe", path)) ?? (await which("powershell", path));
}

export const powershellArgs = (script: string) => ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", script];

export async function searchWindowsUpdate(run: (argv: string[]) => Promise<ProcessResult>, powershell: string) {
  const res = await run([powershell, ...powershellArgs(SEARCH_SCRIPT)]);
  if (res.exitCode !== 0) return { error: wuFailure("the Windows Update search", res), updates: [] as WuUpdate[], rebootRequired: false };
  try {
    return { ...parseSearch(res.stdout), error: undefined };
  } catch {
    return { error: "the Windows Update search printed something that is not JSON", updates: [] as WuUpdate[], rebootRequired: false };
  }
}

export async function scanWindowsUpdate(opts: ScanOptions, platform: NodeJS.Platform = process.platform): Promise<ScanResult> {
  const s = scanSession(WINDOWS_UPDATE, opts);
  if (platform !== "win32") return s.notPresent("Windows Update exists only on Windows");
  const powershell = await findPowerShell(s.env);
  if (!powershell) return s.notPresent("Windows PowerShell is not available on this host");
  // The search always asks the update service (or WSUS): there is no offline list.
  const search = await searchWindowsUpdate(s.run, powershell);
  if (search.error) return s.failed(search.error);
  const notes = search.rebootRequired ? ["a reboot is pending from an earlier install"] : [];
  return s.ran(search.updates.map(toWindowsUpdate), notes);
}

export const windowsUpdateScanner: Scanner = { name: WINDOWS_UPDATE, scan: (opts) => scanWindowsUpdate(opts) };
