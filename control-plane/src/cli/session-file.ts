import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

// The CLI's signed-in session, one file per user account: $REDFLAG_CONFIG_DIR, else
// $XDG_CONFIG_HOME/redflag, else ~/.config/redflag; the file is 0600 in a 0700 folder.
export interface StoredSession {
  server: string;
  token: string;
  username: string;
  expires: string;
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.REDFLAG_CONFIG_DIR) return env.REDFLAG_CONFIG_DIR;
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "redflag");
}

const file = (env?: NodeJS.ProcessEnv) => path.join(configDir(env), "session.json");

// The session for this server, when one is stored and has not expired.
export async function loadSession(server: string, env?: NodeJS.ProcessEnv): Promise<StoredSession | undefined> {
  try {
    const stored = JSON.parse(await readFile(file(env), "utf8")) as StoredSession;
    if (normalise(stored.server) !== normalise(server) || !stored.token) return undefined;
    if (stored.expires && new Date(stored.expires).getTime() <= Date.now()) return undefined;
    return stored;
  } catch {
    return undefined;
  }
}

export async function saveSession(session: StoredSession, env?: NodeJS.ProcessEnv): Promise<string> {
  const dir = configDir(env);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const target = file(env);
  await writeFile(target, JSON.stringify(session, null, 2) + "\n", { mode: 0o600 });
  await chmod(target, 0o600);
  return target;
}

export async function removeSession(env?: NodeJS.ProcessEnv): Promise<void> {
  await rm(file(env), { force: true });
}

const normalise = (url: string) => url.replace(/\/+$/, "");
