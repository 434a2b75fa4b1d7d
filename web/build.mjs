// Builds the page into dist/: index.html at the root, the bundled script
// and style under web/ (the paths the gateway serves), and the grpc-web test
// client into dist-test/.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

await rm("dist", { recursive: true, force: true });
await mkdir("dist/web", { recursive: true });
await copyFile("public/index.html", "dist/index.html");
await build({
  entryPoints: { app: "src/main.ts" },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outdir: "dist/web",
  logLevel: "warning",
});
await build({
  entryPoints: { app: "src/style.css" },
  bundle: true,
  minify: true,
  outdir: "dist/web",
  logLevel: "warning",
});
await build({
  entryPoints: ["test/grpcweb.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outfile: "dist-test/grpcweb.mjs",
  logLevel: "warning",
});
