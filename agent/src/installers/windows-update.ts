import { runProcess, type ProcessResult } from "../run-process.ts";
import { findPowerShell, powershellArgs, searchWindowsUpdate, WINDOWS_UPDATE, wuFailure, wuName } from "../scanners/windows-update.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, toolOutput } from "./common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageResult, ToolOutput } from "./types.ts";

// Downloads and installs the updates whose KB or UpdateID is in $env:REDFLAG_WU_IDS (a JSON
// array the agent sets; names never become script text). Prints one JSON object with a result
// per update: OperationResultCode 2 succeeded, 3 succeeded with errors, 4 failed, 5 aborted.
export const INSTALL_SCRIPT = String.raw`
$ErrorActionPreference = 'Stop'
try {
  $wanted = @(ConvertFrom-Json $env:REDFLAG_WU_IDS)
  $session = New-Object -ComObject Microsoft.Update.Session
  $session.ClientApplicationID = 'RedFlag'
  $found = $session.CreateUpdateSearcher().Search("IsInstalled=0 and IsHidden=0 and Type='Software'")
  $selected = New-Object -ComObject Microsoft.Update.UpdateColl
  $keys = @()
  foreach ($u in $found.Updates) {
    $kb = @($u.KBArticleIDs | ForEach-Object { 'KB' + $_ })
    $key = @($kb + $u.Identity.UpdateID) | Where-Object { $wanted -contains $_ } | Select-Object -First 1
    if ($key) {
      if (-not $u.EulaAccepted) { $u.AcceptEula() }
      [void]$selected.Add($u)
      $keys += $key
    }
  }
  $results = @()
  if ($selected.Count -gt 0) {
    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $selected
    [void]$downloader.Download()
    $installer = $session.CreateUpdateInstaller()
    $installer.Updates = $selected
    $outcome = $installer.Install()
    for ($i = 0; $i -lt $selected.Count; $i++) {
      $r = $outcome.GetUpdateResult($i)
      $results += [pscustomobject]@{ Key = $keys[$i]; Title = $selected.Item($i).Title; ResultCode = $r.ResultCode; HResult = ('0x{0:X8}' -f $r.HResult) }
    }
    $reboot = $outcome.RebootRequired
  } else { $reboot = $false }
  [pscustomobject]@{ Results = $results; RebootRequired = $reboot } | ConvertTo-Json -Depth 3 -Compress
} catch {
  [Console]::Error.WriteLine(('0x{0:X8} {1}' -f $_.Exception.HResult, $_.Exception.Message))
  exit 1
}
`;

export interface WuInstallResult {
  key: string;
  title: string;
  resultCode: number;
  hresult: string;
}

export function parseInstall(text: string): { results: WuInstallResult[]; rebootRequired: boolean } {
  const data = JSON.parse(text.trim() || "{}") as { Results?: unknown; RebootRequired?: unknown };
  const list = Array.isArray(data.Results) ? data.Results : data.Results ? [data.Results] : [];
  const results = (list as Record<string, unknown>[]).map((r) => ({
    key: String(r.Key ?? ""),
    title: String(r.Title ?? ""),
    resultCode: Number(r.ResultCode ?? 0),
    hresult: String(r.HResult ?? ""),
  }));
  return { results, rebootRequired: data.RebootRequired === true };
}

const RESULT_TEXT: Record<number, string> = { 3: "installed with errors", 4: "failed", 5: "aborted" };

export function createWindowsUpdateInstaller(platform: NodeJS.Platform = process.platform): Installer {
  const session = (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const output: ToolOutput[] = [];
    const run = async (argv: string[], env: NodeJS.ProcessEnv = opts.env): Promise<ProcessResult> => {
      const result = await runProcess(argv, { env, signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) });
      // The scripts are long and fixed: record their name, not their text.
      output.push(toolOutput([argv[0]!, ...argv.slice(1, -1), argv.at(-1) === INSTALL_SCRIPT ? "<install script>" : "<search script>"], result));
      return result;
    };
    return { output, run };
  };

  return {
    source: WINDOWS_UPDATE,
    present: async (env) => platform === "win32" && (await findPowerShell(env)) !== undefined,

    // Windows Update has no simulation: each named update that is pending would install.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const powershell = await findPowerShell(opts.env);
      if (!powershell) return { changes: [], output: s.output, error: "Windows PowerShell is not available on this host" };
      const search = await searchWindowsUpdate(s.run, powershell);
      if (search.error) return { changes: [], output: s.output, error: search.error };
      const changes = [];
      for (const ref of packages) {
        const u = search.updates.find((x) => wuName(x) === ref.name || x.updateId === ref.name);
        if (!u) return { changes: [], output: s.output, error: `${ref.name} is not a pending update on this host` };
        changes.push(packageChange(PackageChangeKind.INSTALL, WINDOWS_UPDATE, wuName(u), { to: `${u.updateId}.${u.revision}` }));
      }
      return { changes, output: s.output };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      const s = session(opts);
      const powershell = await findPowerShell(opts.env);
      if (!powershell) return { packages: [], output: s.output, rebootRequired: false, error: "Windows PowerShell is not available on this host" };
      const ids = packages.map((p) => p.name);
      const res = await s.run([powershell, ...powershellArgs(INSTALL_SCRIPT)], { ...opts.env, REDFLAG_WU_IDS: JSON.stringify(ids) });
      if (res.exitCode !== 0) {
        const error = wuFailure("installing Windows updates", res);
        return { packages: packages.map((r) => packageResult(r, PackageResultState.FAILED, { reason: error })), output: s.output, rebootRequired: false, error };
      }
      let parsed: ReturnType<typeof parseInstall>;
      try {
        parsed = parseInstall(res.stdout);
      } catch {
        const error = "the Windows Update install printed something that is not JSON";
        return { packages: packages.map((r) => packageResult(r, PackageResultState.FAILED, { reason: error })), output: s.output, rebootRequired: false, error };
      }
      const results: PackageResult[] = packages.map((ref) => {
        const r = parsed.results.find((x) => x.key === ref.name);
        if (!r) return packageResult(ref, PackageResultState.SKIPPED, { reason: "not pending on this host (installed already, hidden or superseded)" });
        if (r.resultCode === 2) return packageResult(ref, PackageResultState.INSTALLED, { reason: r.title });
        return packageResult(ref, PackageResultState.FAILED, { reason: `${RESULT_TEXT[r.resultCode] ?? `result code ${r.resultCode}`} (${r.hresult})` });
      });
      const failed = results.filter((p) => p.state === PackageResultState.FAILED).length;
      return { packages: results, output: s.output, rebootRequired: parsed.rebootRequired, error: failed > 0 ? `${failed} update(s) failed` : undefined };
    },
    // No rollback: uninstalling Windows updates (wusa /uninstall) is unreliable and many
    // cumulative updates cannot be removed at all.
  };
}

export const windowsUpdateInstaller: Installer = createWindowsUpdateInstaller();
