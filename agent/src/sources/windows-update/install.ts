import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { type PackageRef, PackageRefSchema } from "@redflag/gen/command_pb";
import { runProcess, type ProcessResult } from "../../run-process.ts";
import {
  findPowerShell,
  jsonList,
  parsePowerShellJson,
  powershellArgv,
  recordedArgv,
  SEARCH_SCRIPT,
  searchWindowsUpdate,
  WINDOWS_UPDATE,
  wuErrorText,
  wuFailure,
  wuMatches,
  wuName,
  type WuUpdate,
  wuVersion,
} from "./scan.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, toolOutput } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput } from "../types.ts";

// Searches, selects the requested updates, downloads (UpdateDownloader) and installs
// (UpdateInstaller) them through the Windows Update Agent COM API. The request is the script's
// one argument: hex-encoded UTF-8 JSON, [{"Key":"KB5034441"|UpdateID,"Version":""|"UpdateID.rev"}],
// decoded and parsed as data, never run as code. It prints one JSON object:
//   {"Results":[{Key, UpdateID, Revision, Title, Stage, ResultCode, HResult, RebootRequired}],
//    "RebootRequired": bool}
// Stage is "install" or "download" (ResultCode: 2 succeeded, 3 succeeded with errors,
// 4 failed, 5 aborted), "revision" (Windows Update offers another revision than the one asked
// for) or "input" (the update would ask the user something). Requested updates that are not
// pending have no result. Errors: "0xHRESULT message" on stderr, exit status 1.
export const INSTALL_SCRIPT = String.raw`& {
param([string]$Request)
$ErrorActionPreference = 'Stop'
try {
  try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch { }
  if ($Request -notmatch '^([0-9a-f][0-9a-f])+$') { throw 'the request is not hex-encoded' }
  $bytes = New-Object byte[] ($Request.Length / 2)
  for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = [Convert]::ToByte($Request.Substring($i * 2, 2), 16) }
  $wanted = [Text.Encoding]::UTF8.GetString($bytes) | ConvertFrom-Json
  function Result($key, $u, $stage, $code, $hr, $reboot) {
    [pscustomobject]@{
      Key = [string]$key
      UpdateID = [string]$u.Identity.UpdateID
      Revision = [int]$u.Identity.RevisionNumber
      Title = [string]$u.Title
      Stage = $stage
      ResultCode = [int]$code
      HResult = ('0x{0:X8}' -f [int]$hr)
      RebootRequired = [bool]$reboot
    }
  }
  $session = New-Object -ComObject Microsoft.Update.Session
  $session.ClientApplicationID = 'RedFlag agent'
  $found = $session.CreateUpdateSearcher().Search('IsInstalled=0 and IsHidden=0 and Type=''Software''')
  $results = @()
  $selected = New-Object -ComObject Microsoft.Update.UpdateColl
  $keys = @()
  foreach ($u in $found.Updates) {
    $ident = [string]$u.Identity.UpdateID + '.' + $u.Identity.RevisionNumber
    $names = @([string]$u.Identity.UpdateID) + @(foreach ($kb in $u.KBArticleIDs) { 'KB' + $kb })
    foreach ($w in $wanted) {
      if ($names -notcontains $w.Key) { continue }
      if ($w.Version -and $w.Version -ne $ident) { $results += Result $w.Key $u 'revision' 0 0 $false; break }
      if ($u.InstallationBehavior.CanRequestUserInput) { $results += Result $w.Key $u 'input' 0 0 $false; break }
      if (-not $u.EulaAccepted) { $u.AcceptEula() }
      [void]$selected.Add($u)
      $keys += [string]$w.Key
      break
    }
  }
  $reboot = $false
  if ($selected.Count -gt 0) {
    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $selected
    $download = $downloader.Download()
    $ready = New-Object -ComObject Microsoft.Update.UpdateColl
    $readyKeys = @()
    for ($i = 0; $i -lt $selected.Count; $i++) {
      $u = $selected.Item($i)
      if ($u.IsDownloaded) { [void]$ready.Add($u); $readyKeys += $keys[$i] }
      else { $r = $download.GetUpdateResult($i); $results += Result $keys[$i] $u 'download' $r.ResultCode $r.HResult $false }
    }
    if ($ready.Count -gt 0) {
      $installer = $session.CreateUpdateInstaller()
      try { $installer.ForceQuiet = $true } catch { }
      $installer.AllowSourcePrompts = $false
      $installer.Updates = $ready
      $outcome = $installer.Install()
      $reboot = [bool]$outcome.RebootRequired
      for ($i = 0; $i -lt $ready.Count; $i++) {
        $r = $outcome.GetUpdateResult($i)
        $results += Result $readyKeys[$i] $ready.Item($i) 'install' $r.ResultCode $r.HResult $r.RebootRequired
      }
    }
  }
  $reboot = $reboot -or [bool](New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
  $json = ConvertTo-Json -InputObject ([pscustomobject]@{ Results = $results; RebootRequired = $reboot }) -Depth 4 -Compress
  [Console]::Out.Write([regex]::Replace($json, '[^\x00-\x7F]', [Text.RegularExpressions.MatchEvaluator]{ param($m) '\u{0:x4}' -f [int][char]$m.Value }))
} catch {
  $e = $_.Exception
  while ($e.InnerException) { $e = $e.InnerException }
  [Console]::Error.WriteLine(('0x{0:X8} {1}' -f $e.HResult, $e.Message))
  exit 1
}
}`;

// What the install script is asked for: "KB" and digits, or a lower-case UpdateID.
export function wuKey(name: string): string | undefined {
  if (/^(KB)?\d{1,10}$/i.test(name)) return `KB${name.replace(/^KB/i, "")}`;
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(name)) return name.toLowerCase();
  return undefined;
}

// The script's argument: JSON as hex, which cannot end the quoted literal it travels in.
export function encodeRequest(items: readonly { Key: string; Version: string }[]): string {
  return Buffer.from(JSON.stringify(items), "utf8").toString("hex");
}

export interface WuInstallResult {
  key: string;
  updateId: string;
  revision: number;
  title: string;
  stage: string;
  resultCode: number;
  hresult: string;
  rebootRequired: boolean;
}

// Throws when the text is not the install script's JSON.
export function parseInstall(text: string): { results: WuInstallResult[]; rebootRequired: boolean } {
  const data = parsePowerShellJson(text) as { Results?: unknown; RebootRequired?: unknown } | undefined;
  if (!data || typeof data !== "object" || Array.isArray(data) || !("Results" in data)) throw new Error("not Windows Update install output");
  const results = (jsonList(data.Results) as Record<string, unknown>[])
    .filter((r) => r && typeof r === "object" && typeof r.Key === "string")
    .map((r) => ({
      key: String(r.Key),
      updateId: String(r.UpdateID ?? "").toLowerCase(),
      revision: Number(r.Revision ?? 0) || 0,
      title: String(r.Title ?? ""),
      stage: String(r.Stage ?? ""),
      resultCode: Number(r.ResultCode ?? 0) || 0,
      hresult: String(r.HResult ?? ""),
      rebootRequired: r.RebootRequired === true,
    }));
  return { results, rebootRequired: data.RebootRequired === true };
}

// OperationResultCode: 0 not started, 1 in progress, 2 succeeded, 3 succeeded with errors,
// 4 failed, 5 aborted.
const OUTCOME: Readonly<Record<number, string>> = { 0: "not started", 1: "still in progress", 3: "succeeded with errors", 4: "failed", 5: "aborted" };
const withCode = (hresult: string) => {
  if (!/^0x[0-9A-F]{8}$/i.test(hresult) || /^0x0{8}$/.test(hresult)) return "";
  const known = wuErrorText(hresult);
  return ` (${hresult.toUpperCase().replace(/^0X/, "0x")}${known ? `: ${known}` : ""})`;
};

// The longest request one command line carries comfortably (Windows allows 32767 characters).
const MAX_REQUEST_HEX = 24_000;

export function createWindowsUpdateInstaller(platform: NodeJS.Platform = process.platform): Installer {
  const session = (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const output: ToolOutput[] = [];
    const run = async (argv: string[], record = true): Promise<ProcessResult> => {
      const result = await runProcess(argv, { env: opts.env, signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) });
      if (record) {
        const label = argv.includes(INSTALL_SCRIPT) ? "<windows update install script>" : "<windows update search script>";
        output.push(toolOutput(recordedArgv(recordedArgv(argv, INSTALL_SCRIPT, label), SEARCH_SCRIPT, label), result));
      }
      return result;
    };
    return { output, run };
  };

  const pending = (updates: readonly WuUpdate[], holds: ReadonlySet<string>): PackageRef[] =>
    updates
      .filter((u) => !holds.has(wuName(u)) && !holds.has(u.updateId))
      .map((u) => create(PackageRefSchema, { source: WINDOWS_UPDATE, name: wuName(u) }));

  const failAll = (refs: readonly PackageRef[], reason: string, output: ToolOutput[]): InstallOutcome => ({
    packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason })),
    output,
    rebootRequired: false,
    error: reason,
  });

  return {
    source: WINDOWS_UPDATE,
    present: async (env) => platform === "win32" && (await findPowerShell(env, platform)) !== undefined,

    // Windows Update cannot simulate: the preview is one INSTALL per requested update that is
    // pending now (at the requested revision, when one is given). Updates bring no separate
    // dependencies; Windows Update resolves prerequisites itself, in later searches.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const powershell = await findPowerShell(opts.env, platform);
      if (!powershell) return { changes: [], output: s.output, error: "Windows PowerShell is not available on this host" };
      for (const ref of packages) if (!wuKey(ref.name)) return { changes: [], output: s.output, error: `"${ref.name}" is not a KB article or an UpdateID` };
      const search = await searchWindowsUpdate((argv) => s.run(argv), powershell, true);
      if (search.error) return { changes: [], output: s.output, error: search.error };
      const refs = packages.length > 0 ? packages : pending(search.updates, opts.holds);
      const changes: PackageChange[] = [];
      for (const ref of refs) {
        const u = search.updates.find((x) => wuMatches(x, ref.name));
        if (!u || (ref.version && ref.version.toLowerCase() !== wuVersion(u)) || changes.some((c) => c.name === wuName(u))) continue;
        changes.push(packageChange(PackageChangeKind.INSTALL, WINDOWS_UPDATE, wuName(u), { from: "", to: wuVersion(u) }));
      }
      return { changes, output: s.output };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      const s = session(opts);
      const powershell = await findPowerShell(opts.env, platform);
      if (!powershell) return failAll(packages, "Windows PowerShell is not available on this host", s.output);
      let refs = packages;
      if (refs.length === 0) {
        const search = await searchWindowsUpdate((argv) => s.run(argv, false), powershell, true);
        if (search.error) return { packages: [], output: s.output, rebootRequired: false, error: search.error };
        refs = pending(search.updates, opts.holds);
        if (refs.length === 0) return { packages: [], output: s.output, rebootRequired: false };
      }

      const results = new Map<PackageRef, PackageResult>();
      const request: { Key: string; Version: string }[] = [];
      for (const ref of refs) {
        const key = wuKey(ref.name);
        if (!key) results.set(ref, packageResult(ref, PackageResultState.FAILED, { reason: `"${ref.name}" is not a KB article or an UpdateID` }));
        else if (!request.some((r) => r.Key === key)) request.push({ Key: key, Version: ref.version.toLowerCase() });
      }
      const asked = refs.filter((r) => !results.has(r));
      if (asked.length === 0) return { packages: [...results.values()], output: s.output, rebootRequired: false, error: results.size > 0 ? "no valid update names" : undefined };
      const hex = encodeRequest(request);
      if (hex.length > MAX_REQUEST_HEX) return failAll(refs, `too many updates for one request (${request.length}); install them in smaller groups`, s.output);

      const result = await s.run(powershellArgv(powershell, INSTALL_SCRIPT, [hex]));
      let error: string | undefined;
      if (result.timedOut || result.aborted) {
        // The agent stopped PowerShell, not the Windows Update service: it may finish anyway.
        error = `${wuFailure("installing Windows updates", result)}; Windows Update may still be installing in the background`;
      } else if (result.exitCode !== 0) error = wuFailure("installing Windows updates", result);
      let parsed: ReturnType<typeof parseInstall> | undefined;
      if (!error) {
        try {
          parsed = parseInstall(result.stdout);
        } catch {
          error = "installing Windows updates printed something that is not its JSON";
        }
      }
      if (!parsed) return failAll(refs, error!, s.output);

      const packagesOut: PackageResult[] = refs.map((ref) => {
        const early = results.get(ref);
        if (early) return early;
        const r = parsed.results.find((x) => x.key.toLowerCase() === wuKey(ref.name)!.toLowerCase());
        if (!r) return packageResult(ref, PackageResultState.SKIPPED, { reason: "not pending on this host (installed already, hidden or superseded)" });
        const to = `${r.updateId}.${r.revision}`;
        if (r.stage === "revision") {
          return packageResult(ref, PackageResultState.FAILED, { from: "not installed", to: ref.version, reason: `Windows Update now offers revision ${to}, not ${ref.version}; run a new dry run` });
        }
        if (r.stage === "input") return packageResult(ref, PackageResultState.FAILED, { from: "not installed", to, reason: "the update asks for user input and cannot be installed unattended" });
        if (r.stage === "download") {
          return packageResult(ref, PackageResultState.FAILED, { from: "not installed", to, reason: `download ${OUTCOME[r.resultCode] ?? `result code ${r.resultCode}`}${withCode(r.hresult)}` });
        }
        if (r.resultCode === 2) return packageResult(ref, PackageResultState.INSTALLED, { from: "not installed", to });
        if (r.resultCode === 3) return packageResult(ref, PackageResultState.INSTALLED, { from: "not installed", to, reason: `installed with errors${withCode(r.hresult)}` });
        return packageResult(ref, PackageResultState.FAILED, { from: "not installed", to, reason: `installation ${OUTCOME[r.resultCode] ?? `result code ${r.resultCode}`}${withCode(r.hresult)}` });
      });
      const failed = packagesOut.filter((p) => p.state === PackageResultState.FAILED).length;
      return {
        packages: packagesOut,
        output: s.output,
        rebootRequired: parsed.rebootRequired || parsed.results.some((r) => r.rebootRequired),
        error: failed > 0 ? `${failed} of ${plural(refs.length, "update")} failed` : undefined,
      };
    },

    // No rollback: Windows Update has no "install an earlier revision", and uninstalling an
    // update (wusa /uninstall, DISM) is unreliable: cumulative and servicing-stack updates
    // often cannot be removed at all. The executor answers "unsupported".
  };
}

export const windowsUpdateInstaller: Installer = createWindowsUpdateInstaller();
