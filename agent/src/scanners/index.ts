import { aptScanner } from "./apt.ts";
import { brewScanner } from "./brew.ts";
import { dnfScanner } from "./dnf.ts";
import { dockerScanner } from "./docker.ts";
import { flatpakScanner } from "./flatpak.ts";
import { pacmanScanner } from "./pacman.ts";
import { snapScanner } from "./snap.ts";
import type { Scanner } from "./types.ts";
import { windowsUpdateScanner } from "./windows-update.ts";
import { wingetScanner } from "./winget.ts";
import { zypperScanner } from "./zypper.ts";

// Every package source this agent knows, in the order a full scan runs them. A source whose
// tool is missing reports NOT_PRESENT in a few milliseconds.
export const SCANNERS: readonly Scanner[] = [
  aptScanner,
  dnfScanner,
  zypperScanner,
  pacmanScanner,
  snapScanner,
  flatpakScanner,
  brewScanner,
  wingetScanner,
  windowsUpdateScanner,
  dockerScanner,
];

export function scannerNamed(name: string): Scanner | undefined {
  return SCANNERS.find((s) => s.name === name);
}
