import { SvelteMap } from "svelte/reactivity";
import type { Api } from "./api.ts";

// What an audit entry's target ("user:<uuid>", "agent:<uuid>", "registration_token:<uuid>",
// "api_token:<uuid>", "rollout:<uuid>", "release:<version>") is called, with a link where the
// console has a page for it. Names are looked up in batches: one list call per kind the page
// shows (people, agents, registration tokens, API tokens, rollouts), never one call per row. Agents that list misses (more than
// one page of them) are asked for one by one, each once.
export interface TargetLabel {
  // "user", "agent", "registration token" …; empty for targets with no kind ("settings").
  kind: string;
  // The name when known ("ana", "web-1", "rfreg_ab12cd…"), else the ID.
  name: string;
  known: boolean;
  href?: string;
}

const KINDS: Record<string, string> = {
  user: "user",
  agent: "agent",
  registration_token: "registration token",
  api_token: "API token",
  release: "release",
  rollout: "rollout",
  session: "session",
  username: "username",
};
// Targets whose ID is their name.
const SELF_NAMED = new Set(["release", "username"]);
const LIST_SIZE = 500;

export class AuditTargets {
  #api: Api;
  #names = new SvelteMap<string, string>();
  #loaded = new Set<string>();
  #askedAgents = new Set<string>();

  constructor(api: Api) {
    this.#api = api;
  }

  // Loads the names of every kind among these targets that is not loaded yet.
  want(targets: Iterable<string>) {
    const kinds = new Set<string>();
    const agents: string[] = [];
    for (const t of targets) {
      const [kind, id] = split(t);
      if (!id) continue;
      kinds.add(kind);
      if (kind === "agent") agents.push(id);
    }
    if (kinds.has("user")) this.#once("user", async () => {
      const res = await this.#api.users.listUsers({ pageSize: LIST_SIZE });
      for (const u of res.users) this.#names.set(`user:${u.id}`, u.displayName && u.displayName !== u.username ? `${u.displayName} (${u.username})` : u.username);
    });
    if (kinds.has("agent")) {
      const listed = this.#once("agent", async () => {
        const res = await this.#api.fleet.listAgents({ pageSize: LIST_SIZE });
        for (const a of res.agents) this.#names.set(`agent:${a.id}`, a.hostname);
      });
      void listed.then(() => this.#lookUpAgents(agents));
    }
    if (kinds.has("registration_token")) this.#once("registration_token", async () => {
      const res = await this.#api.tokens.listRegistrationTokens({ pageSize: LIST_SIZE });
      for (const t of res.tokens) this.#names.set(`registration_token:${t.id}`, `${t.prefix}…${t.note ? ` (${t.note})` : ""}`);
    });
    if (kinds.has("api_token")) this.#once("api_token", async () => {
      const res = await this.#api.apiTokens.listApiTokens({ allUsers: true });
      for (const t of res.tokens) this.#names.set(`api_token:${t.id}`, `${t.name} (${t.prefix}…, ${t.username})`);
    });
    // The newest rollouts (the page's own list size); an older one shows its ID, still linked.
    if (kinds.has("rollout")) this.#once("rollout", async () => {
      const res = await this.#api.rollouts.listRollouts({ pageSize: 200 });
      for (const r of res.rollouts) this.#names.set(`rollout:${r.id}`, r.spec?.name ?? r.id);
    });
  }

  #once(kind: string, load: () => Promise<void>): Promise<void> {
    if (this.#loaded.has(kind)) return Promise.resolve();
    this.#loaded.add(kind);
    // Asked again the next time the page wants it.
    return load().catch(() => void this.#loaded.delete(kind));
  }

  #lookUpAgents(ids: string[]) {
    for (const id of new Set(ids)) {
      if (this.#names.has(`agent:${id}`) || this.#askedAgents.has(id)) continue;
      this.#askedAgents.add(id);
      this.#api.fleet.getAgent({ agentId: id }).then(
        (res) => void (res.agent && this.#names.set(`agent:${id}`, res.agent.hostname)),
        () => undefined,
      );
    }
  }

  label(target: string): TargetLabel {
    const [kind, id] = split(target);
    if (!id) return { kind: "", name: target, known: false };
    const name = SELF_NAMED.has(kind) ? id : this.#names.get(target);
    return { kind: KINDS[kind] ?? kind.replace(/_/g, " "), name: name ?? id, known: name !== undefined, href: hrefOf(kind, id) };
  }
}

function split(target: string): [string, string] {
  const m = /^([a-z_]+):(.+)$/.exec(target);
  return m ? [m[1]!, m[2]!] : [target, ""];
}

function hrefOf(kind: string, id: string): string | undefined {
  switch (kind) {
    case "agent":
      return /^[0-9a-f-]{36}$/i.test(id) ? `/agents/${id}` : undefined;
    case "user":
      return "/settings?tab=people";
    case "api_token":
      return "/settings?tab=api-tokens";
    case "registration_token":
      return "/tokens";
    case "rollout":
      return /^[0-9a-f-]{36}$/i.test(id) ? `/rollouts?id=${id}` : undefined;
    default:
      return undefined;
  }
}
