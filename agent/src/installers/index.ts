import { aptInstaller } from "./apt.ts";
import { dnfInstaller } from "./dnf.ts";
import { dockerInstaller } from "./docker.ts";
import type { Installer } from "./types.ts";

// Every package source this agent can install from, by source name.
export const INSTALLERS: ReadonlyMap<string, Installer> = new Map([aptInstaller, dnfInstaller, dockerInstaller].map((i) => [i.source, i]));
