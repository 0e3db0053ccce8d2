import { OsFamily } from "@redflag/gen/common_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { healthLabel } from "./format.ts";

// How fleet filters are spelled in URLs (`/agents?health=never_reported&os=linux`), so links
// from one page (the dashboard's health cards) open the right view on another.

// Every health state, in the order people read them: good first, decommissioned last.
export const HEALTH_STATES = [AgentHealth.ONLINE, AgentHealth.STALE, AgentHealth.OFFLINE, AgentHealth.NEVER_REPORTED, AgentHealth.DECOMMISSIONED];

// AgentHealth.NEVER_REPORTED → "never_reported".
export const healthParam = (h: AgentHealth) => healthLabel(h).replace(/ /g, "_");
export const parseHealth = (text: string | null): AgentHealth =>
  HEALTH_STATES.find((h) => healthParam(h) === text) ?? AgentHealth.UNSPECIFIED;

export const OS_FAMILIES = [OsFamily.LINUX, OsFamily.WINDOWS, OsFamily.DARWIN];
const OS_PARAMS: Record<number, string> = { [OsFamily.LINUX]: "linux", [OsFamily.WINDOWS]: "windows", [OsFamily.DARWIN]: "macos" };
export const osParam = (f: OsFamily) => OS_PARAMS[f] ?? "";
export const parseOs = (text: string | null): OsFamily => OS_FAMILIES.find((f) => OS_PARAMS[f] === text) ?? OsFamily.UNSPECIFIED;
