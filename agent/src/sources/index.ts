import { aptInstaller } from "./apt/install.ts";
import { aptScanner } from "./apt/scan.ts";
import { brewInstaller } from "./brew/install.ts";
import { brewScanner } from "./brew/scan.ts";
import { dnfInstaller } from "./dnf/install.ts";
import { dnfScanner } from "./dnf/scan.ts";
import { dockerInstaller } from "./docker/install.ts";
import { dockerScanner } from "./docker/scan.ts";
import { flatpakInstaller } from "./flatpak/install.ts";
import { flatpakScanner } from "./flatpak/scan.ts";
import { pacmanInstaller } from "./pacman/install.ts";
import { pacmanScanner } from "./pacman/scan.ts";
import { snapInstaller } from "./snap/install.ts";
import { snapScanner } from "./snap/scan.ts";
import type { Installer, PackageSource, Scanner } from "./types.ts";
import { windowsUpdateInstaller } from "./windows-update/install.ts";
import { windowsUpdateScanner } from "./windows-update/scan.ts";
import { wingetInstaller } from "./winget/install.ts";
import { wingetScanner } from "./winget/scan.ts";
import { zypperInstaller } from "./zypper/install.ts";
import { zypperScanner } from "./zypper/scan.ts";

const source = (scanner: Scanner, installer: Installer): PackageSource => ({ name: scanner.name, scanner, installer });

// Every package source this agent knows, in the order of PACKAGE_SOURCES (@redflag/common): the
// order a full scan runs them. A source whose tool is missing reports NOT_PRESENT in a few
// milliseconds. index.test.ts checks that this is exactly PACKAGE_SOURCES.
export const SOURCES: readonly PackageSource[] = [
  source(aptScanner, aptInstaller),
  source(dnfScanner, dnfInstaller),
  source(zypperScanner, zypperInstaller),
  source(pacmanScanner, pacmanInstaller),
  source(snapScanner, snapInstaller),
  source(flatpakScanner, flatpakInstaller),
  source(brewScanner, brewInstaller),
  source(wingetScanner, wingetInstaller),
  source(windowsUpdateScanner, windowsUpdateInstaller),
  source(dockerScanner, dockerInstaller),
];

export const SCANNERS: readonly Scanner[] = SOURCES.map((s) => s.scanner);

// The installer of each source, by source name.
export const INSTALLERS: ReadonlyMap<string, Installer> = new Map(SOURCES.map((s) => [s.name, s.installer]));

export function scannerNamed(name: string): Scanner | undefined {
  return SCANNERS.find((s) => s.name === name);
}
