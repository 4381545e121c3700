import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The console is served by the gateway at /; during `npm run dev` the API is
// proxied to a local seghub (SEGHUB_URL, default http://127.0.0.1:8080).
const api = process.env.SEGHUB_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // No inline data: URIs, so the CSP can stay "self" only.
    assetsInlineLimit: 0,
    reportCompressedSize: false,
    // Two pages: the console, and the OFREP demo (its own entry, so the
    // OpenFeature SDK never weighs on the console's first load).
    rollupOptions: {
      input: { index: "index.html", "ofrep-demo": "ofrep-demo.html" },
    },
  },
  server: {
    proxy: Object.fromEntries(["/v1", "/ofrep", "/oauth", "/webhooks", "/openapi.json", "/healthz"].map((p) => [p, api])),
  },
  test: {
    environment: "happy-dom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
