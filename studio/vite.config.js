// The console is served by spine-gateway under /studio (assets embedded in the
// binary), so every URL it builds is relative to that base.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/studio/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Reproducible output: the committed dist/ is compared with a fresh build.
    sourcemap: false,
  },
});
