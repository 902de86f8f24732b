// Bundles a browser entry point (js-libp2p and all its dependencies) with
// esbuild. buildPage: page.mjs into dist/page.js with index.html beside it
// (browser.mjs). bundle: any entry into any directory (relay-browser.mjs
// builds relay-page.mjs into a temporary one). Offline: esbuild only.
import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))

/**
 * Bundles <entry>.mjs of this directory into <outdir>/<entry>.js (and its
 * source map).
 *
 * @param {string} entry - e.g. 'page'
 * @param {string} outdir
 * @returns {Promise<string>} the bundle's path
 */
export async function bundle (entry, outdir) {
  await mkdir(outdir, { recursive: true })
  const outfile = join(outdir, `${entry}.js`)
  await build({
    entryPoints: [join(here, `${entry}.mjs`)],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'browser', // picks each package's "browser" mappings
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning'
  })
  return outfile
}

export async function buildPage () {
  const dist = join(here, 'dist')
  await bundle('page', dist)
  await copyFile(join(here, 'index.html'), join(dist, 'index.html'))
  return dist
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(await buildPage())
}
