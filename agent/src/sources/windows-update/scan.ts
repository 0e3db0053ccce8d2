import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { access } from "node:fs/promises";
import path from "node:path";
import { describeFailure, which, type ProcessResult } from "../../run-process.ts";
import { scanSession, severityFromWord } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const WINDOWS_UPDATE = "windows_update";

// Searches through the Windows Update Agent COM API and prints one JSON object:
//   {"Updates":[{Title, KBArticleIDs, UpdateID, RevisionNumber, MsrcSeverity, MaxDownloadSize,
//     RebootBehavior, Categories, CategoryIDs}, …], "RebootRequired": bool}
// `$Mode` is 'online' (ask Windows Update or WSUS now) or 'offline' (the results of Windows'
// own last scan). Non-ASCII characters are written as \uXXXX escapes, so the JSON survives
// whatever code page the console has. A COM failure goes to stderr as "0xHRESULT message",
// exit status 1. The script has no double quotes: it travels through the Windows command line.
export const SEARCH_SCRIPT = String.raw`& {
param([string]$Mode)
$ErrorActionPreference = 'Stop'
try {
  try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch { }
  $session = New-Object -ComObject Microsoft.Update.Session
  $session.ClientApplicationID = 'RedFlag agent'
  $searcher = $session.CreateUpdateSearcher()
  $searcher.Online = ($Mode -ne 'offline')
  $found = $searcher.Search('IsInstalled=0 and IsHidden=0 and Type=''Software''')
  $updates = @(foreach ($u in $found.Updates) {
    [pscustomobject]@{
      Title = [string]$u.Title
      KBArticleIDs = @(foreach ($kb in $u.KBArticleIDs) { [string]$kb })
      UpdateID = [string]$u.Identity.UpdateID
      RevisionNumber = [int]$u.Identity.RevisionNumber
      MsrcSeverity = $u.MsrcSeverity
      MaxDownloadSize = [int64]$u.MaxDownloadSize
      RebootBehavior = [int]$u.InstallationBehavior.RebootBehavior
      Categories = @(foreach ($c in $u.Categories) { [string]$c.Name })
      CategoryIDs = @(foreach ($c in $u.Categories) { [string]$c.CategoryID })
    }
  })
  $reboot = [bool](New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
  $json = ConvertTo-Json -InputObject ([pscustomobject]@{ Updates = $updates; RebootRequired = $reboot }) -Depth 4 -Compress
  [Console]::Out.Write([regex]::Replace($json, '[^\x00-\x7F]', [Text.RegularExpressions.MatchEvaluator]{ param($m) '\u{0:x4}' -f [int][char]$m.Value }))
} catch {
  $e = $_.Exception
  while ($e.InnerException) { $e = $e.InnerException }
  [Console]::Error.WriteLine(('0x{0:X8} {1}' -f $e.HResult, $e.Message))
  exit 1
}
}`;

// Update classifications by CategoryID (the same in every language; their names are not).
export const SECURITY_UPDATES = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
const CLASSIFICATIONS = new Set([
  SECURITY_UPDATES,
  "e6cf1350-c01b-414d-a61f-263d14d133b4", // Critical Updates
  "e0789628-ce08-4437-be74-2495b842f43b", // Definition Updates
  "cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83", // Updates
  "28bc880e-0592-4cbf-8f95-c79b17911d5f", // Update Rollups
  "b54e7d24-7add-428f-8b75-90a396fa584f", // Feature Packs
  "68c5b0a3-d1a6-4553-ae49-01d3a7827828", // Service Packs
  "b4832bd8-e735-4761-8daf-37f882276dab", // Tools
  "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0", // Drivers
  "3689bdc8-b205-4af4-8d4a-a63924c5e9d5", // Upgrades
  "5c9376ab-8ce6-464a-b136-22113dd69801", // Application
]);
const CLASSIFICATION_NAMES = new Set(["Security Updates", "Critical Updates", "Definition Updates", "Updates", "Update Rollups", "Feature Packs", "Service Packs", "Tools", "Drivers", "Upgrades"]);

export interface WuUpdate {
  title: string;
  kb: string[];
  updateId: string;
  revision: number;
  msrcSeverity: string;
  maxDownloadSize: number;
  // InstallationBehavior.RebootBehavior: 0 never reboots, 1 always requires one, 2 can request one.
  rebootBehavior: number;
  categories: string[];
  categoryIds: string[];
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ConvertTo-Json's shapes for a list: an array, one bare object for a single item (Windows
// PowerShell unrolls one-element arrays in a pipeline), null or nothing for none, and
// {"value":[…],"Count":n} for an array PowerShell had wrapped.
export function jsonList(v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (v === null || v === undefined || v === "") return [];
  const wrapped = v as { value?: unknown; Count?: unknown };
  if (typeof v === "object" && Array.isArray(wrapped.value) && "Count" in wrapped) return wrapped.value;
  return [v];
}

// The JSON a PowerShell script printed; undefined for no output at all.
export function parsePowerShellJson(text: string): unknown {
  const trimmed = text.replace(/^\uFEFF/, "").trim();
  if (!trimmed) return undefined;
  try {
    return JSON.parse(trimmed);
  } catch (err) {
    // Something (a profile, a module) wrote a line before it: take the JSON that follows.
    const start = trimmed.search(/^[[{]/m);
    if (start <= 0) throw err;
    return JSON.parse(trimmed.slice(start));
  }
}

// The search output: our wrapper object, or a bare list, one bare update, null or nothing.
// Throws when the text is not JSON of that shape.
export function parseSearch(text: string): { updates: WuUpdate[]; rebootRequired: boolean; ignored: number } {
  const data = parsePowerShellJson(text);
  let list: unknown[];
  let rebootRequired = false;
  if (data === undefined || data === null || Array.isArray(data)) list = jsonList(data);
  else if (typeof data === "object" && "Updates" in data) {
    list = jsonList((data as { Updates: unknown }).Updates);
    rebootRequired = (data as { RebootRequired?: unknown }).RebootRequired === true;
  } else if (typeof data === "object" && ("UpdateID" in data || "value" in data)) list = jsonList(data);
  else throw new Error("not Windows Update search output");
  const updates: WuUpdate[] = [];
  let ignored = 0;
  for (const raw of list as Record<string, unknown>[]) {
    if (!raw || typeof raw !== "object" || typeof raw.UpdateID !== "string" || !GUID.test(raw.UpdateID)) {
      ignored++;
      continue;
    }
    updates.push({
      title: String(raw.Title ?? ""),
      kb: jsonList(raw.KBArticleIDs).map((k) => String(k).replace(/^KB/i, "")).filter((k) => /^\d+$/.test(k)),
      updateId: raw.UpdateID.toLowerCase(),
      revision: Number(raw.RevisionNumber ?? 0) || 0,
      msrcSeverity: typeof raw.MsrcSeverity === "string" ? raw.MsrcSeverity : "",
      maxDownloadSize: Number(raw.MaxDownloadSize ?? 0) || 0,
      rebootBehavior: Number(raw.RebootBehavior ?? 0) || 0,
      categories: jsonList(raw.Categories).map(String),
      categoryIds: jsonList(raw.CategoryIDs).map((c) => String(c).toLowerCase()),
    });
  }
  return { updates, rebootRequired, ignored };
}

// The name operators know an update by: its first KB article ("KB5034441"). An update without
// one (drivers, some Store and Defender items) goes by its UpdateID: its title has spaces and
// punctuation no package name may carry.
export const wuName = (u: Pick<WuUpdate, "kb" | "updateId">): string => (u.kb[0] ? `KB${u.kb[0]}` : u.updateId);
// The exact revision Windows Update offers: "UpdateID.RevisionNumber".
export const wuVersion = (u: Pick<WuUpdate, "updateId" | "revision">): string => `${u.updateId}.${u.revision}`;

// Whether a ref names this update: by KB ("KB5034441", any case) or by UpdateID.
export const wuMatches = (u: Pick<WuUpdate, "kb" | "updateId">, name: string): boolean =>
  u.updateId === name.toLowerCase() || u.kb.some((kb) => `KB${kb}` === name.toUpperCase() || kb === name);

export function isSecurityUpdate(u: Pick<WuUpdate, "categories" | "categoryIds" | "msrcSeverity">): boolean {
  return u.categoryIds.includes(SECURITY_UPDATES) || u.categories.includes("Security Updates") || severityFromWord(u.msrcSeverity) !== UpdateSeverity.UNKNOWN;
}

// Severity is Microsoft's MSRC rating (Critical, Important, Moderate, Low); a security update
// without one is SECURITY; anything else UNKNOWN.
export function toWindowsUpdate(u: WuUpdate): PackageUpdate {
  const rated = severityFromWord(u.msrcSeverity);
  const security = isSecurityUpdate(u);
  const classification =
    u.categories.find((_, i) => CLASSIFICATIONS.has(u.categoryIds[i] ?? "")) ?? u.categories.find((c) => CLASSIFICATION_NAMES.has(c)) ?? u.categories[0];
  return create(PackageUpdateSchema, {
    source: WINDOWS_UPDATE,
    name: wuName(u),
    currentVersion: "not installed",
    availableVersion: wuVersion(u),
    architecture: "",
    repository: classification || "Windows Update",
    severity: rated !== UpdateSeverity.UNKNOWN ? rated : security ? UpdateSeverity.SECURITY : UpdateSeverity.UNKNOWN,
    security,
    sizeBytes: BigInt(Math.max(0, Math.round(u.maxDownloadSize))),
    rebootRequired: u.rebootBehavior !== 0,
  });
}

// Windows Update Agent errors people meet, by HRESULT (WUA and Win32 error codes).
export const WU_ERRORS: Readonly<Record<string, string>> = {
  "0x8024402C": "cannot resolve the update server or proxy name (check network, DNS and proxy)",
  "0x80240438": "no route to the update service (network, firewall or policy)",
  "0x80072EE2": "the update service did not answer in time (network)",
  "0x80072EE7": "the update server name does not resolve (DNS)",
  "0x80072EFD": "cannot connect to the update service (network)",
  "0x80072F8F": "TLS to the update service failed (clock or certificates)",
  "0x8024401C": "the update server timed out (HTTP 408)",
  "0x80244017": "the update server refused access (HTTP 401)",
  "0x80244018": "the update server or a proxy forbids access (HTTP 403)",
  "0x80244019": "the update server does not have it (HTTP 404; check the WSUS address)",
  "0x80244022": "the update service is unavailable (HTTP 503)",
  "0x8024002E": "access to Windows Update is disabled by policy",
  "0x80070422": "the Windows Update service is disabled",
  "0x8024A000": "Automatic Updates could not serve the request (service stopped?)",
  "0x8024001E": "Windows Update is shutting down or restarting",
  "0x80240009": "another Windows Update operation is in progress",
  "0x80240016": "another installation is in progress, or a restart is pending",
  "0x8024000B": "the operation was cancelled",
  "0x80240024": "there are no updates to install",
  "0x80240022": "every update in the operation failed",
  "0x80240017": "the update does not apply to this computer",
  "0x80070005": "access denied; the agent must run as SYSTEM or an administrator",
  "0x80070643": "the update's installer failed",
  "0x800F0922": "the update's installation failed (servicing stack or system reserved partition)",
  "0x80070070": "there is not enough disk space",
  "0x80040154": "the Windows Update Agent COM classes are not registered",
};

export function wuErrorText(hresult: string): string | undefined {
  return WU_ERRORS[`0x${hresult.replace(/^0x/i, "").toUpperCase()}`];
}

// Why a PowerShell/WUA run failed: the script's "0xHRESULT message" line with the HRESULT
// named, else PowerShell's own words.
export function wuFailure(what: string, result: ProcessResult): string {
  if (result.spawnError || result.timedOut || result.aborted || result.exitCode === null) return describeFailure(what, result);
  const m = /(?:^|\s)0x([0-9A-Fa-f]{8})\b[ \t]*(.*)$/m.exec(result.stderr);
  if (!m) return describeFailure(what, result);
  const code = `0x${m[1]!.toUpperCase()}`;
  const known = WU_ERRORS[code];
  const message = m[2]!.trim();
  return `${what} failed (${code}${known ? `: ${known}` : ""})${message ? `: ${message.length > 200 ? `${message.slice(0, 200)}…` : message}` : ""}`;
}

const envValue = (env: NodeJS.ProcessEnv, name: string): string | undefined =>
  env[name] ?? Object.entries(env).find(([k]) => k.toUpperCase() === name.toUpperCase())?.[1];

// Windows PowerShell (5.1 ships with every supported Windows): the one in System32 first, so a
// powershell.exe placed earlier on PATH never runs in its stead (the agent runs as SYSTEM);
// PATH only where System32 has none (the tests' fake, off Windows).
export async function findPowerShell(env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): Promise<string | undefined> {
  if (platform === "win32") {
    const builtIn = path.win32.join(envValue(env, "SystemRoot") ?? "C:\\Windows", "System32", "WindowsPowerShell", "v1.0", "powershell.exe");
    if (await access(builtIn).then(() => true, () => false)) return builtIn;
  }
  return which("powershell.exe", envValue(env, "PATH") ?? "");
}

// `powershell.exe -Command` joins every argument after the script into its command text, so
// arguments are passed as single-quoted literals of characters that cannot end one.
export function powershellArgv(powershell: string, script: string, args: readonly string[] = []): string[] {
  for (const a of args) if (!/^[A-Za-z0-9._-]*$/.test(a)) throw new Error(`unsafe PowerShell argument: ${a}`);
  return [powershell, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", script, ...args.map((a) => `'${a}'`)];
}

// For the record: the fixed script by name, not its text.
export const recordedArgv = (argv: readonly string[], script: string, label: string) => argv.map((a) => (a === script ? label : a));

export async function searchWindowsUpdate(run: (argv: string[]) => Promise<ProcessResult>, powershell: string, online: boolean) {
  const result = await run(powershellArgv(powershell, SEARCH_SCRIPT, [online ? "online" : "offline"]));
  const none = { updates: [] as WuUpdate[], rebootRequired: false, ignored: 0, result };
  if (result.exitCode !== 0) return { ...none, error: wuFailure("the Windows Update search", result) };
  try {
    return { ...parseSearch(result.stdout), result, error: undefined };
  } catch {
    return { ...none, error: "the Windows Update search printed something that is not its JSON" };
  }
}

export async function scanWindowsUpdate(opts: ScanOptions, platform: NodeJS.Platform = process.platform): Promise<ScanResult> {
  const s = scanSession(WINDOWS_UPDATE, opts);
  if (platform !== "win32") return s.notPresent("Windows Update exists only on Windows");
  const powershell = await findPowerShell(s.env, platform);
  if (!powershell) return s.notPresent("Windows PowerShell is not available on this host");
  // With refresh the search asks Windows Update (or the WSUS server policy names) now; without
  // it, it reads what Windows' own last scan found.
  const search = await searchWindowsUpdate((argv) => s.run(argv), powershell, opts.refresh);
  if (search.error) return s.failed(search.error);
  const notes: string[] = [];
  if (!opts.refresh) notes.push("results of Windows' last update scan (refresh disabled)");
  if (search.rebootRequired) notes.push("a restart is pending from an earlier install");
  if (search.ignored > 0) notes.push(`${search.ignored} unrecognised entr${search.ignored === 1 ? "y" : "ies"} ignored`);
  return s.ran(search.updates.map(toWindowsUpdate), notes);
}

export const windowsUpdateScanner: Scanner = { name: WINDOWS_UPDATE, scan: (opts) => scanWindowsUpdate(opts) };
