/**
 * The `fleet` command's build: the TypeScript sources bundled once by esbuild into `dist/` (git-ignored),
 * so that `fleet` starts as plain JavaScript instead of compiling TypeScript at every start (tsx stays for
 * the tests, the benchmarks and development). `npm ci` / `npm install` run it (the `prepare` script);
 * `npm run build` runs it by hand; bin/fleet.mjs runs it again when a source is newer than the build.
 *
 * - Two entry points: the CLI (cli/main.ts; each command stays a lazily loaded chunk, so `fleet --help`
 *   loads only the command table) and the simulator's load worker (device-sim/worker-main.ts, forked).
 * - Packages stay external (node_modules is there at run time); only Fleet's own code is bundled.
 * - `import.meta.url` keeps meaning the source file's URL: the few modules that read a file beside them
 *   (broker/default-policy.yaml, registry/migrations/) or resolve packages from themselves then work the
 *   same from dist/ as from source. `import.meta.fleetCompiled` is true in the build, undefined under tsx.
 * - dist/build-info.json lists the inputs, so a stale build is detected with one stat per source file.
 */
import { statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = join(ROOT, 'dist');
export const BUILD_INFO = join(DIST, 'build-info.json');

/** Rewrites `import.meta.url` in Fleet's own sources to the source file's URL, relative to the output file. */
const sourceUrls = {
  name: 'fleet-source-urls',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`)) return undefined;
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return { contents: text, loader: 'ts' };
      // Every output file sits directly in dist/ (entryNames and chunkNames below), one level under ROOT.
      const rel = `../${relative(ROOT, args.path).split(sep).join('/')}`;
      return {
        contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`),
        loader: 'ts',
      };
    });
  },
};

/**
 * Builds dist/ and returns what it took. Throws when esbuild reports an error (nothing is written then).
 *
 * `clean` (npm's prepare, `npm run build`) empties dist/ first. Without it (the rebuild bin/fleet.mjs does
 * when a source changed), files are replaced one by one, each written beside and renamed into place,
 * chunks before the entry points: a `fleet up` already running from dist/ still finds every chunk it may
 * load later (chunk names carry their content's hash, so old ones stay as they were), and a `fleet`
 * starting meanwhile reads either the old entry point or the new one, never half of one.
 */
export async function build({ quiet = false, clean = true } = {}) {
  const esbuild = await import('esbuild');
  const t0 = performance.now();
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { main: 'cli/main.ts', 'worker-main': 'device-sim/worker-main.ts' },
    outdir: DIST,
    entryNames: '[name]',
    chunkNames: '[name]-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.19',
    packages: 'external',
    sourcemap: 'linked',
    metafile: true,
    write: false,
    logLevel: quiet ? 'silent' : 'warning',
    define: { 'import.meta.fleetCompiled': 'true' },
    plugins: [sourceUrls],
  });
  if (clean) await rm(DIST, { recursive: true, force: true });
  await mkdir(DIST, { recursive: true });
  const entries = new Set(['main.js', 'worker-main.js'].map((f) => join(DIST, f)));
  const files = [...result.outputFiles].sort(
    (a, b) => Number(entries.has(a.path)) - Number(entries.has(b.path)),
  );
  for (const f of files) {
    const tmp = `${f.path}.${process.pid}.tmp`;
    await writeFile(tmp, f.contents);
    await rename(tmp, f.path);
  }
  const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.startsWith('node_modules/'));
  // The build started at t0: a source saved while it ran counts as newer than the build.
  const builtAt = Date.now() - Math.ceil(performance.now() - t0);
  const info = `${JSON.stringify({ builtAt, node: process.version, inputs }, null, 2)}\n`;
  await writeFile(`${BUILD_INFO}.${process.pid}.tmp`, info);
  await rename(`${BUILD_INFO}.${process.pid}.tmp`, BUILD_INFO);
  return { ms: Math.round(performance.now() - t0), inputs: inputs.length };
}

/**
 * Why dist/ cannot be used as is, or undefined when it can: missing, or a source newer than the build
 * (then the first such file is named).
 */
export async function staleReason() {
  let info;
  try {
    info = JSON.parse(await readFile(BUILD_INFO, 'utf8'));
  } catch {
    return 'dist/ has not been built';
  }
  for (const f of info.inputs) {
    let m;
    try {
      m = statSync(join(ROOT, f)).mtimeMs;
    } catch {
      return `${f} is gone since the last build`;
    }
    if (m > info.builtAt) return `${f} changed since the last build`;
  }
  return undefined;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  build().then(
    (r) => process.stderr.write(`fleet: built dist/ from ${r.inputs} sources in ${r.ms} ms\n`),
    (e) => {
      process.stderr.write(`fleet: build failed: ${e.message}\n`);
      process.exitCode = 1;
    },
  );
}
