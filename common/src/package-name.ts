import { PACKAGE_SOURCES } from "./sources.ts";
// What may be handed to a package tool as a package: checked by the control plane before a
// command is stored (a clear InvalidArgument now) and by the agent before the tool runs (it
// trusts the signature, not the input).

// Package names across sources: Debian and RPM names, Homebrew formulae ("node@20",
// "user/tap/formula"), snap and flatpak IDs ("org.mozilla.firefox"), winget IDs
// ("Microsoft.PowerToys"), Docker references ("ghcr.io/org/app:1.2" or "@sha256:…"). Never a
// leading "-" (it would read as an option), never whitespace, quotes or shell metacharacters.
// One character class each, so checked in linear time.
const FIRST = "A-Za-z0-9_@";
const REST = "A-Za-z0-9_@.+:/=";
export const MAX_PACKAGE_NAME_LENGTH = 255;

// The package-name rule with `also` allowed on top (holds add "*") and `maxLength` characters.
export function packageNamePattern(also = "", maxLength = MAX_PACKAGE_NAME_LENGTH): RegExp {
  return new RegExp(`^[${FIRST}${also}][${REST}${also}-]{0,${maxLength - 1}}$`);
}

export const PACKAGE_NAME = packageNamePattern();

// What each source's tool takes as one package and nothing more. apt, dnf and zypper install a
// local file or a URL given where a name goes ("./x.deb", "https://…/x.rpm"), dnf a group
// ("@group"), zypper a pattern or patch ("pattern:x"), apt a target release ("curl/sid"),
// pacman a repository's package ("repo/name"): names of these sources are plain names, without
// "/", ":" or "@".
export const PLAIN_PACKAGE_NAME = /^[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,254}$/;
// Every source but Homebrew (names with taps, below) and Docker (image references, checked by
// the docker source itself).
export const PLAIN_NAME_SOURCES: readonly string[] = PACKAGE_SOURCES.filter((s) => s !== "brew" && s !== "docker");
// Homebrew: "formula", "node@20", "user/tap/formula" (the tap must already be installed: the
// agent upgrades only what `brew outdated` lists).
export const BREW_PACKAGE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,99}(?:\/[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,99}){0,2}$/;

// The stricter rule a source's names follow on top of PACKAGE_NAME; undefined where there is none.
export function sourceNamePattern(source: string): RegExp | undefined {
  if (source === "brew") return BREW_PACKAGE_NAME;
  return PLAIN_NAME_SOURCES.includes(source) ? PLAIN_PACKAGE_NAME : undefined;
}

// Versions: Debian/RPM epochs and tildes, semver, build tags.
export const PACKAGE_VERSION = /^[A-Za-z0-9_][A-Za-z0-9_.+~:-]{0,127}$/;
export const PACKAGE_ARCH = /^[A-Za-z0-9_-]{0,32}$/;
