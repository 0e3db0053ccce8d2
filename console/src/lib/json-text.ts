// JSON text from the API (audit before/after, security event details) laid out for reading;
// text that is not JSON is shown as it is.
export function prettyJson(text: string): string {
  if (!text) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
