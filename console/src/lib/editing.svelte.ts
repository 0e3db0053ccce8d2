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

// Seconds as the control plane's duration syntax ("4h", "90s", "2w"): the largest unit that
// divides them, so a saved duration reads back into a form as it was written.
export function durationText(seconds: number | bigint): string {
  const s = Number(seconds);
  for (const [unit, size] of [["w", 604_800], ["d", 86_400], ["h", 3600], ["m", 60]] as const) {
    if (s > 0 && s % size === 0) return `${s / size}${unit}`;
  }
  return `${s}s`;
}
