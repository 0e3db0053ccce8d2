// Whether the control plane answers. When a call cannot reach it (a restart, a network blip)
// the console shows "reconnecting" instead of error walls, probes until it answers, then bumps
// `epoch` so every page reloads what it shows.
class Connection {
  online = $state(true);
  epoch = $state(0);
  #probe: (() => Promise<unknown>) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #delayMs = 1000;

  // The call used to check the server is back (set by the layout: a cheap public RPC).
  setProbe(probe: () => Promise<unknown>) {
    this.#probe = probe;
  }

  lost() {
    if (!this.online) return;
    this.online = false;
    this.#delayMs = 1000;
    this.#schedule();
  }

  reached() {
    if (this.online) return;
    this.online = true;
    clearTimeout(this.#timer);
    this.epoch++;
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(async () => {
      if (this.online) return;
      try {
        await this.#probe?.();
        this.reached();
      } catch {
        this.#delayMs = Math.min(this.#delayMs * 2, 10_000);
        this.#schedule();
      }
    }, this.#delayMs);
  }
}

export const connection = new Connection();
