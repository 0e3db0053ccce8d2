import adapter from "@sveltejs/adapter-static";
import { sveltekit } from "@sveltejs/kit/vite";
import { defineConfig } from "vite";

// A single-page app of static files: the control plane serves them at / on its own port (one
// origin, no CORS) and answers every other page with index.html. In development
// (`npm run dev -w console`) the API is proxied to a control plane on :8080.
const api = "http://127.0.0.1:8080";
export default defineConfig({
  plugins: [sveltekit({ adapter: adapter({ pages: "build", assets: "build", fallback: "index.html", strict: false }) })],
  server: { proxy: { "/redflag.v1.": api, "/auth/oidc/": api } },
});
