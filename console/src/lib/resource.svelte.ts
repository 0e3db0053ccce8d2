import { connection } from "./connection.svelte.ts";
import { describe, isUnreachable } from "./api.ts";

// Data a page shows, loaded from the API. Created during a component's setup: it loads at once,
// again whenever reactive state read synchronously by `fetch` changes (filters, the page's
// ID) and again when the server is back after a restart. A late answer to an older request
// never overwrites a newer one; while the server is unreachable the last data stays up and the
// layout says "reconnecting" instead of an error.
export class Resource<T> {
  value: T | undefined = $state();
  loading = $state(true);
  error = $state("");
  #fetch: () => Promise<T>;
  #generation = 0;

  constructor(fetch: () => Promise<T>) {
    this.#fetch = fetch;
  }

  // Reloads; resolves when done (errors end up in `error`, never thrown).
  async reload(): Promise<void> {
    const generation = ++this.#generation;
    this.loading = true;
    try {
      const value = await this.#fetch();
      if (generation !== this.#generation) return;
      this.value = value;
      this.error = "";
    } catch (err) {
      if (generation !== this.#generation) return;
      this.error = isUnreachable(err) ? "" : describe(err);
    } finally {
      if (generation === this.#generation) this.loading = false;
    }
  }

  // The first load has not finished yet: show a skeleton rather than an empty state.
  get initial() {
    return this.loading && this.value === undefined;
  }
}

export function resource<T>(fetch: () => Promise<T>): Resource<T> {
  const r = new Resource(fetch);
  $effect(() => {
    void connection.epoch;
    // reload() calls fetch synchronously, so the effect tracks what the request reads; it only
    // writes the resource's own state, which it never reads here.
    void r.reload();
  });
  return r;
}
