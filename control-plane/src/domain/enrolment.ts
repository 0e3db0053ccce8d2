// How a machine joins the fleet: the URL agents dial, whether other machines can reach it, and
// the one line to paste on each platform. The Tokens page, `redflag tokens create`, the setup
// wizard and the install scripts (/install/*) all take these from here, so what they print is
// the same everywhere and matches what the scripts accept.
import os from "node:os";

// The request that asked (a Connect HandlerContext has this shape): its Host, X-Forwarded-Host
// and X-Forwarded-Proto headers and its URL.
export interface RequestOrigin {
  requestHeader: { get(name: string): string | null };
  url: string;
}

// The URL agents should dial: the configured public URL, else what the caller used.
export function agentServerUrl(origin: RequestOrigin, publicUrl: string | undefined): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, "");
  const header = (name: string) => origin.requestHeader.get(name);
  const host = header("x-forwarded-host") ?? header("host") ?? "127.0.0.1:8080";
  const forwarded = header("x-forwarded-proto");
  const proto = forwarded === "https" || forwarded === "http" ? forwarded : origin.url.startsWith("https:") ? "https" : "http";
  return `${proto}://${host}`;
}

// Whether a URL's host is this machine (127.0.0.0/8, ::1, localhost): plain http there never
// crosses a network, and no other machine can reach it.
export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

// The first IPv4 address of this machine that other machines could use, if it has one.
export function lanAddress(interfaces = os.networkInterfaces()): string | undefined {
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

// Empty when other machines can use the commands as printed; otherwise one sentence saying why
// not and what to set.
export function serverUrlWarning(url: string, lan = lanAddress()): string {
  if (!isLoopbackUrl(url)) return "";
  const u = new URL(url);
  const example = `${u.protocol}//${lan ?? "192.168.1.10"}${u.port ? `:${u.port}` : ""}`;
  return (
    `${u.host} is this machine's loopback address: the commands work on this machine only, other machines cannot reach it. ` +
    `Set REDFLAG_PUBLIC_URL to an address they can reach (for example REDFLAG_PUBLIC_URL=${example}) and restart the control plane.`
  );
}

export const INSTALL_PLATFORMS = ["linux", "macos", "windows"] as const;
export type InstallPlatform = (typeof INSTALL_PLATFORMS)[number];

// Quoted for sh and PowerShell alike: the values are checked to hold no quote.
function quoted(value: string): string {
  if (/['\r\n]/.test(value)) throw new Error("a value in an install command holds a quote or a line break");
  return `'${value}'`;
}

// What to paste on each platform: download the control plane's own install script and run it
// as root (Administrator) with the token and the signing-key fingerprint. The script checks the
// release against that fingerprint, installs the agent as a service, registers and starts it.
// Plain http to another machine needs the agent's explicit --insecure-http, said in a comment.
export function installCommands(server: string, secret: string, fingerprint: string): { platform: InstallPlatform; command: string }[] {
  const insecure = server.startsWith("http:") && !isLoopbackUrl(server);
  const note = insecure
    ? "# plain http: anyone on the network path can read the token; serve https (REDFLAG_TLS_CERT, REDFLAG_TLS_KEY) to drop --insecure-http\n"
    : "";
  const sh = (script: string) =>
    `${note}curl -fsSL ${quoted(`${server}/install/${script}`)} | sudo sh -s -- --token ${quoted(secret)} --fingerprint ${fingerprint}${insecure ? " --insecure-http" : ""}`;
  const windows =
    `${note.replace(/--insecure-http/, "-InsecureHttp")}` +
    `& ([scriptblock]::Create((Invoke-RestMethod ${quoted(`${server}/install/windows.ps1`)}))) -Token ${quoted(secret)} -Fingerprint ${fingerprint}${insecure ? " -InsecureHttp" : ""}`;
  return [
    { platform: "linux", command: sh("linux.sh") },
    { platform: "macos", command: sh("macos.sh") },
    { platform: "windows", command: windows },
  ];
}
