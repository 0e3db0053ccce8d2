// $app/state for component tests: a page whose URL a test sets with setTestUrl.
class TestPage {
  url = $state(new URL("http://console.test/"));
  params: Record<string, string> = $state({});
}
export const page = new TestPage();
export function setTestUrl(path: string, params: Record<string, string> = {}) {
  page.url = new URL(path, "http://console.test");
  page.params = params;
}
