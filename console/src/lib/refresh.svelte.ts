// Calls `refresh` every `ms` while the page is in view, and at once when it comes back into
// view after longer than that. Call during a component's setup; it stops with the component.
export function refreshWhileVisible(refresh: () => void, ms: number): void {
  $effect(() => {
    let last = Date.now();
    const run = () => {
      last = Date.now();
      refresh();
    };
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") run();
    }, ms);
    const onVisible = () => {
      if (document.visibilityState === "visible" && Date.now() - last >= ms) run();
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  });
}
