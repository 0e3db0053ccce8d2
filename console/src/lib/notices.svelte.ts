// Short confirmations ("Scan queued for web-1") and failures of background actions, shown in
// one polite live region by the layout so screen readers hear them too.
export interface Notice {
  id: number;
  text: string;
  kind: "ok" | "error";
}

class Notices {
  list: Notice[] = $state([]);
  #next = 1;

  push(text: string, kind: Notice["kind"] = "ok", ms = 6000) {
    const id = this.#next++;
    this.list = [...this.list, { id, text, kind }];
    if (ms > 0) setTimeout(() => this.dismiss(id), ms);
  }
  dismiss(id: number) {
    this.list = this.list.filter((n) => n.id !== id);
  }
}

export const notices = new Notices();
