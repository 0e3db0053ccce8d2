import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log.ts";

// Serves the built console (static files from `npm run build -w @redflag/console`) at / on the
// API's port: one origin, no CORS. Unknown pages get index.html (the console routes in the
// browser); hashed assets under /_app/immutable are cached for a year. Without a built console
// its pages say how to build it, and the API keeps working.


const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

// What HTTP/1.1 and HTTP/2 (compatibility API) responses both offer.
interface Response {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(): unknown;
  end(body: string): unknown;
}

interface Request {
  method?: string | undefined;
  url?: string | undefined;
  headers?: { accept?: string | undefined };
}

export interface ConsoleFiles {
  // Answers GET/HEAD requests for console pages and assets; false when it is not one.
  handle(req: Request, res: Response & NodeJS.WritableStream): Promise<boolean>;
}

// How to get a console, for the log and for the page a browser gets without one.
export const CONSOLE_BUILD_HINT = "build it with `npm run build:console` in the RedFlag checkout (`npm start` builds it too), or run the Docker image, which has it built";

export function createConsoleFiles(dir: string, logger: Logger): ConsoleFiles {
  const root = path.resolve(dir);
  const index = path.join(root, "index.html");
  const file = async (p: string) => (await stat(p).then((s) => s.isFile(), () => false)) ? p : undefined;
  // Said once at start-up; pages keep saying it until the console is built (then it is served
  // without a restart).
  void file(index).then((found) => {
    if (!found) logger.warn({ consoleDir: root }, `the web console is not built (no ${index}): / only says how to get it; ${CONSOLE_BUILD_HINT}`);
  });
  return {
    async handle(req, res) {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      let pathname: string;
      try {
        pathname = decodeURIComponent((req.url ?? "/").split("?")[0]!);
      } catch {
        return false;
      }
      // API calls and other server routes are never console pages.
      if (pathname.startsWith("/redflag.v1.") || pathname.startsWith("/auth/") || pathname === "/healthz") return false;
      const wanted = path.resolve(root, `.${pathname}`);
      if (wanted !== root && !wanted.startsWith(root + path.sep)) return false;
      const extensionless = path.extname(pathname) === "";
      const found = (await file(wanted)) ?? (extensionless ? await file(index) : undefined);
      if (!found) {
        // A page (or /index.html itself) of a console that is not there.
        if (!(extensionless || pathname.endsWith(".html")) || (await file(index))) return false;
        sendPage(req, res, 503, {
          title: "The RedFlag console is not built",
          lines: [
            "The control plane is running (agents, the API and the redflag CLI work), but it has no web console to show.",
            `To get one, ${CONSOLE_BUILD_HINT}; then reload this page.`,
          ],
        });
        return true;
      }
      const immutable = found.includes(`${path.sep}_app${path.sep}immutable${path.sep}`);
      res.writeHead(200, {
        "content-type": TYPES[path.extname(found)] ?? "application/octet-stream",
        "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        ...(found.endsWith(".html") ? { "x-frame-options": "DENY" } : {}),
      });
      if (req.method === "HEAD") {
        res.end();
        return true;
      }
      createReadStream(found).pipe(res);
      return true;
    },
  };
}

// The answer for a path nothing serves: a small page for a browser, one line for curl and scripts.
export function sendNotFound(req: Request, res: Response, pathname: string): void {
  sendPage(req, res, 404, {
    title: "Not found",
    lines: [`There is nothing at ${pathname.length > 200 ? `${pathname.slice(0, 200)}…` : pathname} on this RedFlag server.`, "The web console is at /."],
  });
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// `code spans` in the lines become <code> on the page.
const toHtml = (text: string) => escapeHtml(text).replace(/`([^`]+)`/g, "<code>$1</code>");

// A page of a few sentences: HTML for browsers (they ask for text/html), plain text otherwise.
// It loads nothing and runs nothing.
function sendPage(req: Request, res: Response, status: number, page: { title: string; lines: string[] }): void {
  const html = (req.headers?.accept ?? "").includes("text/html");
  const body = html
    ? `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(page.title)} · RedFlag</title>` +
      `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328}code{background:#f0f1f3;padding:0 .25rem;border-radius:3px}</style></head>\n` +
      `<body><h1>${escapeHtml(page.title)}</h1>\n${page.lines.map((l) => `<p>${toHtml(l)}</p>`).join("\n")}\n</body></html>\n`
    : `${[page.title, ...page.lines].join("\n")}\n`;
  res.writeHead(status, {
    "content-type": html ? "text/html; charset=utf-8" : "text/plain; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...(html ? { "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'", "x-frame-options": "DENY" } : {}),
  });
  res.end(req.method === "HEAD" ? "" : body);
}
