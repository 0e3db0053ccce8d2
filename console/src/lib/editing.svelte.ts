import { tick } from "svelte";

// Which row of a list is being edited, and where the focus goes when the edit ends: back to
// the button that started it (its `data-edit` attribute names the row), so a keyboard or
// screen-reader user lands where they were.
export class Editing<T extends { id: string }> {
  item: T | undefined = $state();

  start(item: T) {
    this.item = item;
  }

  async stop() {
    const id = this.item?.id;
    this.item = undefined;
    await tick();
    if (id) [...document.querySelectorAll<HTMLElement>("[data-edit]")].find((el) => el.dataset.edit === id)?.focus();
  }
}
