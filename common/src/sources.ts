// The package sources, by the name every message carries for them (PackageRef.source,
// PackageUpdate.source, SubsystemConfig.name, SubsystemRun.subsystem …; the .proto comments point
// here). The order is the one a full scan runs them in and the console lists them in. A new
// source is added here first; the agent's registry (agent/src/sources/index.ts) must then have
// a scanner and an installer for it, which its test checks.
export const PACKAGE_SOURCES = ["apt", "dnf", "zypper", "pacman", "snap", "flatpak", "brew", "winget", "windows_update", "docker"] as const;
export type PackageSourceName = (typeof PACKAGE_SOURCES)[number];

// What the agent collects beside the package sources, each on its own schedule: host metrics.
export const METRIC_SUBSYSTEMS = ["system", "storage"] as const;

// Every subsystem an operator can tune in an agent's config: the package sources, then the
// host metrics.
export const SUBSYSTEMS = [...PACKAGE_SOURCES, ...METRIC_SUBSYSTEMS] as const;
export type SubsystemName = (typeof SUBSYSTEMS)[number];

export const isPackageSource = (name: string): name is PackageSourceName => (PACKAGE_SOURCES as readonly string[]).includes(name);
export const isSubsystem = (name: string): name is SubsystemName => (SUBSYSTEMS as readonly string[]).includes(name);
