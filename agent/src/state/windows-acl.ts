// The state directory on Windows, where file modes mean nothing: who may use it is its ACL.
// %ProgramData% lets every user read, create folders, and create files in folders that inherit
// its ACL, so a directory the agent did not lock down itself may hold files another account
// planted (an agent.key it knows) or may read. The agent therefore locks down the directories it
// creates at once, and refuses an existing one that is not private to SYSTEM and Administrators.
import { mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { system32, toolOutput, type HostAccess } from "../platform.ts";
import { StateError } from "../errors.ts";

// Full control for LocalSystem and the Administrators group (by SID: account names are
// translated), inherited by every file and folder inside.
export const WINDOWS_STATE_GRANTS = ["*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"];
const ADMINISTRATORS = "*S-1-5-32-544";

// Who may own the directory or be allowed into it: SYSTEM, Administrators (SDDL aliases and
// SIDs), and CREATOR OWNER / OWNER RIGHTS, which only pass rights on to whoever already may create.
const TRUSTED = new Set(["SY", "BA", "S-1-5-18", "S-1-5-32-544", "CO", "S-1-3-0", "OW", "S-1-3-4"]);

export async function ensureWindowsPrivateDir(dir: string, host: HostAccess): Promise<void> {
  const created = await mkdir(dir, { recursive: true });
  if (created === undefined) return checkPrivate(dir, host);
  const icacls = system32(host, "icacls.exe");
  const targets = [...new Set([created, dir])];
  const fail = async (message: string): Promise<never> => {
    await rm(created, { recursive: true, force: true });
    throw new StateError(message);
  };
  for (const target of targets) {
    for (const args of [["/inheritance:r", "/grant:r", ...WINDOWS_STATE_GRANTS], ["/setowner", ADMINISTRATORS]]) {
      const out = await toolOutput(host, [icacls, target, ...args]);
      if ("error" in out) await fail(`cannot restrict ${target} to SYSTEM and Administrators, so it was not created: ${out.error}`);
    }
  }
  // Until the ACL was set, the new directories inherited %ProgramData%'s, which lets users
  // create files: anything in them now was put there by someone else.
  const chain = path.relative(created, dir).split(path.sep).filter(Boolean);
  let at = created;
  for (const next of [...chain, undefined]) {
    const names = await readdir(at);
    if (names.some((name) => name !== next)) await fail(`another account wrote into ${at} while the agent was creating it; it was removed again`);
    if (next) at = path.join(at, next);
  }
}

async function checkPrivate(dir: string, host: HostAccess): Promise<void> {
  const powershell = system32(host, "WindowsPowerShell\\v1.0\\powershell.exe");
  const script = `[Console]::Out.Write((Get-Acl -LiteralPath '${dir.replace(/'/g, "''")}').Sddl)`;
  const out = await toolOutput(host, [powershell, "-NoProfile", "-NonInteractive", "-EncodedCommand", Buffer.from(script, "utf16le").toString("base64")]);
  if ("error" in out) throw new StateError(`cannot check who may use ${dir}: ${out.error}`);
  const descriptor = parseSddl(out.stdout.trim());
  if (!descriptor) throw new StateError(`cannot check who may use ${dir}: Get-Acl printed no security descriptor`);
  const others = foreignAccess(descriptor);
  if (others.length > 0) {
    throw new StateError(
      `${dir} is not private to SYSTEM and Administrators (${others.join(", ")}), so the agent does not use it: ` +
        "remove it (the agent creates it again, private; then register again), or, if nobody else can have written into it, " +
        `give it their ACL alone: icacls "${dir}" /inheritance:r /grant:r ${WINDOWS_STATE_GRANTS.join(" ")} /T, then icacls "${dir}" /setowner ${ADMINISTRATORS} /T`,
    );
  }
}

export interface SecurityDescriptor {
  owner: string;
  // Undefined when the descriptor has no DACL (everyone may do everything).
  dacl: { type: string; flags: string; rights: string; sid: string }[] | undefined;
}

// SDDL as Get-Acl's .Sddl prints it: "O:BAG:SYD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)".
export function parseSddl(sddl: string): SecurityDescriptor | undefined {
  const owner = /^O:([A-Z]{2}|S(?:-\d+)+)(?=[GDS]:|$)/.exec(sddl)?.[1];
  if (!owner) return undefined;
  const daclText = /D:([A-Z_]*)((?:\([^()]*\))*)/.exec(sddl);
  if (!daclText || daclText[1]!.includes("NO_ACCESS_CONTROL")) return { owner, dacl: undefined };
  const dacl = [...daclText[2]!.matchAll(/\(([^()]*)\)/g)].map((m) => {
    const [type = "", flags = "", rights = "", , , sid = ""] = m[1]!.split(";");
    return { type, flags, rights, sid };
  });
  return { owner, dacl };
}

// Who else owns or may use the directory, in words; empty when it is private.
export function foreignAccess(sd: SecurityDescriptor): string[] {
  const others: string[] = [];
  if (!TRUSTED.has(sd.owner)) others.push(`owned by ${sd.owner}`);
  if (!sd.dacl) return [...others, "no ACL: everyone may use it"];
  for (const ace of sd.dacl) {
    if ((ace.type === "A" || ace.type === "OA") && !TRUSTED.has(ace.sid)) others.push(`${ace.sid} allowed ${ace.rights}`);
  }
  return [...new Set(others)];
}
