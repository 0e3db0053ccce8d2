import type { PackageUpdate, SubsystemRun } from "@redflag/gen/command_pb";

export interface ScanOptions {
  // Upper bound for the whole scan, including any metadata refresh.
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  // Environment for child processes; PATH decides which tools are found.
  env: NodeJS.ProcessEnv;
  isRoot: boolean;
  // Refresh the source's metadata first (apt-get update, dnf makecache …) when it can.
  refresh: boolean;
}

export interface ScanResult {
  // RAN, FAILED (with the reason) or NOT_PRESENT when the tool does not exist on this host.
  run: SubsystemRun;
  updates: PackageUpdate[];
}

// One package source (apt, dnf, docker …): its subsystem name and how to scan it. A missing
// tool is NOT_PRESENT, never an error; a tool that fails is FAILED with a human reason.
export interface Scanner {
  readonly name: string;
  scan(opts: ScanOptions): Promise<ScanResult>;
}
