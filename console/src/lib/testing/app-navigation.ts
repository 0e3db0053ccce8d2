// $app/navigation for component tests: navigation is recorded, not performed.
export const navigations: string[] = [];
export async function goto(url: string | URL): Promise<void> {
  navigations.push(String(url));
}
export async function invalidateAll(): Promise<void> {}
export function afterNavigate(): void {}
export function beforeNavigate(): void {}
