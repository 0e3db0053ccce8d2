import { cleanup } from "@testing-library/svelte";
import { afterEach } from "vitest";

// Each test renders into a fresh document.
afterEach(() => cleanup());
