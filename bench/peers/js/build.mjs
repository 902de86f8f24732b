// Bundles page.mjs (js-libp2p and all its dependencies) for the browser
// into dist/page.js and copies index.html beside it. Offline: esbuild only.
import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

export async function buildPage () {
  const here = dirname(fileURLToPath(import.meta.url))
  const dist = join(here, 'dist')
  await mkdir(dist, { recursive: true })
  await build({
    entryPoints: [join(here, 'page.mjs')],
    outfile: join(dist, 'page.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser', // picks each package's "browser" mappings
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning'
  })
  await copyFile(join(here, 'index.html'), join(dist, 'index.html'))
  return dist
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(await buildPage())
}
