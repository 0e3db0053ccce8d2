import { untrack } from "svelte";
import { SvelteMap } from "svelte/reactivity";
import type { Api } from "./api.ts";

// Hostnames by agent ID for views that only carry IDs (commands, failures). Each unknown ID
// is looked up once with GetAgent; until it answers (or when it cannot), `get` is undefined
// and the view shows the short ID instead.
export class Hostnames {
  #api: Api;
  #asked = new Set<string>();
  #names = new SvelteMap<string, string>();

  constructor(api: Api) {
    this.#api = api;
  }

  // Agents the view already has in full: no lookup needed.
  know(agents: { id: string; hostname: string }[]) {
    untrack(() => {
      for (const a of agents) {
        this.#asked.add(a.id);
        if (this.#names.get(a.id) !== a.hostname) this.#names.set(a.id, a.hostname);
      }
    });
  }

  want(ids: Iterable<string>) {
    for (const id of ids) {
      if (!id || this.#asked.has(id)) continue;
      this.#asked.add(id);
      this.#api.fleet.getAgent({ agentId: id }).then(
        (res) => {
          if (res.agent) this.#names.set(id, res.agent.hostname);
        },
        // Asked again the next time a view wants it.
        () => this.#asked.delete(id),
      );
    }
  }

  get(id: string): string | undefined {
    return this.#names.get(id);
  }
}
