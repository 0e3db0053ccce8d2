import { createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import { render } from "@testing-library/svelte";
import type { Component } from "svelte";
import { API_CONTEXT, connectionInterceptor, createApi, type Api } from "#lib/api.ts";

// Component tests talk to handlers written in the test through Connect's in-memory router
// transport: the same clients, serialization and error codes as against the real server.
export function createTestApi(routes: (router: ConnectRouter) => void): Api {
  return createApi(createRouterTransport(routes, { transport: { interceptors: [connectionInterceptor] } }));
}

// Renders a component with the API in context, as the console layout provides it.
export function renderWithApi<P extends Record<string, any>>(component: Component<P>, routes: (router: ConnectRouter) => void, props?: P) {
  const api = createTestApi(routes);
  return { api, ...render(component, { props: props ?? ({} as P), context: new Map<unknown, unknown>([[API_CONTEXT, api]]) } as never) };
}
