import { describe } from "./api.ts";
import { resource, type Resource } from "./resource.svelte.ts";

export interface Page<T> {
  items: T[];
  // The next page's token; empty on the last page.
  next: string;
  // How many match in all, for lists whose server says (ListUpdates).
  total?: number;
}

// A list the server pages ("Load more"). The first page is a resource (reloads with its
// filters and when the server is back, which drops the pages loaded after it); `loadMore()`
// appends the next. Created during a component's setup.
export class Paged<T> {
  readonly first: Resource<Page<T>>;
  more: T[] = $state([]);
  loadingMore = $state(false);
  moreError = $state("");
  #next = $state("");
  #generation = 0;
  #fetchPage: (pageToken: string) => Promise<Page<T>>;

  constructor(fetchPage: (pageToken: string) => Promise<Page<T>>) {
    this.#fetchPage = fetchPage;
    this.first = resource(() => {
      const generation = ++this.#generation;
      return fetchPage("").then((page) => {
        if (generation === this.#generation) {
          this.more = [];
          this.#next = page.next;
          this.moreError = "";
        }
        return page;
      });
    });
  }

  get items(): T[] {
    return [...(this.first.value?.items ?? []), ...this.more];
  }

  get hasMore(): boolean {
    return this.#next !== "";
  }

  async loadMore(): Promise<void> {
    if (!this.#next || this.loadingMore) return;
    const generation = this.#generation;
    this.loadingMore = true;
    this.moreError = "";
    try {
      const page = await this.#fetchPage(this.#next);
      if (generation !== this.#generation) return;
      this.more = [...this.more, ...page.items];
      this.#next = page.next;
    } catch (err) {
      if (generation === this.#generation) this.moreError = describe(err);
    } finally {
      this.loadingMore = false;
    }
  }

  // Puts a changed item in place (after an action answered with it) without reloading.
  replace(match: (item: T) => boolean, next: T): void {
    const first = this.first.value;
    if (first) this.first.value = { ...first, items: first.items.map((i) => (match(i) ? next : i)) };
    this.more = this.more.map((i) => (match(i) ? next : i));
  }

  remove(match: (item: T) => boolean): void {
    const first = this.first.value;
    if (first) this.first.value = { ...first, items: first.items.filter((i) => !match(i)) };
    this.more = this.more.filter((i) => !match(i));
  }
}

export const paged = <T>(fetchPage: (pageToken: string) => Promise<Page<T>>) => new Paged<T>(fetchPage);
