import { aptInstaller } from "./apt.ts";
import { dnfInstaller } from "./dnf.ts";
import type { Installer } from "./types.ts";

// Every package source this agent can install from, by source name.
export const INSTALLERS: ReadonlyMap<string, Installer> = new Map([aptInstaller, dnfInstaller].map((i) => [i.source, i]));
