import { aptInstaller } from "./apt.ts";
import { dnfInstaller } from "./dnf.ts";
import { dockerInstaller } from "./docker.ts";
import { pacmanInstaller } from "./pacman.ts";
import { snapInstaller } from "./snap.ts";
import { flatpakInstaller } from "./flatpak.ts";
import { brewInstaller } from "./brew.ts";
import { wingetInstaller } from "./winget.ts";
import { zypperInstaller } from "./zypper.ts";
import type { Installer } from "./types.ts";

// Every package source this agent can install from, by source name.
export const INSTALLERS: ReadonlyMap<string, Installer> = new Map([aptInstaller, dnfInstaller, zypperInstaller, pacmanInstaller, snapInstaller, flatpakInstaller, brewInstaller, wingetInstaller, dockerInstaller].map((i) => [i.source, i]));
