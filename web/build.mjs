// `npm run build`: bundles the demo page and the client library into dist/ with esbuild.
// Deterministic: the same sources and lockfile give byte-identical output (no timestamps,
// no absolute paths, no source maps).
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const common = {
  absWorkingDir: root,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // Browsers mediasoup-client supports (its handlers need these or newer).
  target: ['chrome111', 'firefox120', 'safari16'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  // mediasoup-client's debug logging reads process.env in places.
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
};

await build({
  ...common,
  // The page's script, client included.
  entryPoints: { demo: 'src/demo.js', 'fanout-client': 'src/fanout-client.js' },
  outdir: dist,
});
await copyFile(join(root, 'index.html'), join(dist, 'index.html'));
await copyFile(join(root, 'style.css'), join(dist, 'style.css'));
console.log(`built ${dist}`);
