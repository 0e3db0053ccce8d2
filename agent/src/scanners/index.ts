import { aptScanner } from "./apt.ts";
import { dnfScanner } from "./dnf.ts";
import { dockerScanner } from "./docker.ts";
import { pacmanScanner } from "./pacman.ts";
import { snapScanner } from "./snap.ts";
import { flatpakScanner } from "./flatpak.ts";
import { brewScanner } from "./brew.ts";
import { wingetScanner } from "./winget.ts";
import { zypperScanner } from "./zypper.ts";
import type { Scanner } from "./types.ts";

// Every package source this agent knows, in the order a full scan runs them.
export const SCANNERS: readonly Scanner[] = [aptScanner, dnfScanner, zypperScanner, pacmanScanner, snapScanner, flatpakScanner, brewScanner, wingetScanner, dockerScanner];

export function scannerNamed(name: string): Scanner | undefined {
  return SCANNERS.find((s) => s.name === name);
}
