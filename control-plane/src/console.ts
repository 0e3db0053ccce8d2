import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";

// Serves the built console (static files from `npm run build -w @redflag/console`) at / on the
// API's port: one origin, no CORS. Unknown pages get index.html (the console routes in the
// browser); hashed assets under /_app/immutable are cached for a year.

export const DEFAULT_CONSOLE_DIR = path.resolve(import.meta.dirname, "..", "..", "console", "build");

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

interface Response {
  writeHead(status: number, headers?: Record<string, string>): unknown;
  end(body?: string): unknown;
}

export interface ConsoleFiles {
  // Answers GET/HEAD requests for console pages and assets; false when it is not one.
  handle(req: { method?: string | undefined; url?: string | undefined }, res: Response & NodeJS.WritableStream): Promise<boolean>;
}

export function createConsoleFiles(dir: string): ConsoleFiles {
  const root = path.resolve(dir);
  const file = async (p: string) => (await stat(p).then((s) => s.isFile(), () => false)) ? p : undefined;
  return {
    async handle(req, res) {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      const pathname = decodeURIComponent((req.url ?? "/").split("?")[0]!);
      // API calls and other server routes are never console pages.
      if (pathname.startsWith("/redflag.v1.") || pathname.startsWith("/auth/") || pathname === "/healthz") return false;
      const wanted = path.resolve(root, `.${pathname}`);
      if (wanted !== root && !wanted.startsWith(root + path.sep)) return false;
      const found = (await file(wanted)) ?? (path.extname(pathname) === "" ? await file(path.join(root, "index.html")) : undefined);
      if (!found) return false;
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
