import { aptInstaller } from "./apt.ts";
import { brewInstaller } from "./brew.ts";
import { dnfInstaller } from "./dnf.ts";
import { dockerInstaller } from "./docker.ts";
import { flatpakInstaller } from "./flatpak.ts";
import { pacmanInstaller } from "./pacman.ts";
import { snapInstaller } from "./snap.ts";
import type { Installer } from "./types.ts";
import { windowsUpdateInstaller } from "./windows-update.ts";
import { wingetInstaller } from "./winget.ts";
import { zypperInstaller } from "./zypper.ts";

// Every package source this agent can install from, by source name (the scanner's name).
export const INSTALLERS: ReadonlyMap<string, Installer> = new Map(
  [
    aptInstaller,
    dnfInstaller,
    zypperInstaller,
    pacmanInstaller,
    snapInstaller,
    flatpakInstaller,
    brewInstaller,
    wingetInstaller,
    windowsUpdateInstaller,
    dockerInstaller,
  ].map((i) => [i.source, i]),
);
