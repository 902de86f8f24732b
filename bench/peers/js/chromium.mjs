// Headless Chromium for the browser harnesses (browser.mjs, relay-browser.mjs):
// a loopback HTTP server for a bundled page, and Debian's Chromium driven
// through playwright-core with a fresh profile directory.
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { extname, join } from 'node:path'
import { chromium } from 'playwright-core'

// LAUNCH_ARGS keep a headless run off the network and out of the user's
// profile.
export const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

export const DEFAULT_CHROMIUM = '/usr/bin/chromium'

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json' }

/**
 * Serves the named files of dir ('/' is '/index.html') on
 * http://127.0.0.1:<free port>/: a secure context that may still open
 * ws:// to loopback. Anything else is 404.
 *
 * @param {string} dir
 * @param {string[]} names - paths such as '/index.html'
 * @returns {Promise<import('node:http').Server>}
 */
export function serveFiles (dir, names) {
  const files = new Set(names)
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname
    const name = path === '/' ? '/index.html' : path
    if (name === '/favicon.ico') {
      res.writeHead(204).end()
      return
    }
    if (!files.has(name)) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': TYPES[extname(name)], 'cache-control': 'no-store' })
    createReadStream(join(dir, name)).pipe(res)
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

/**
 * Launches Chromium with a fresh profile directory (removed by close) and
 * returns its first page, with the page's console and errors sent to log.
 *
 * @param {object} o
 * @param {string} o.executablePath
 * @param {string[]} [o.args] - flags beyond LAUNCH_ARGS
 * @param {(msg: string) => void} o.log
 */
export async function launchChromium ({ executablePath, args = [], log }) {
  const profile = await mkdtemp(join(tmpdir(), 'swarmgate-chromium-'))
  let context
  const close = async () => {
    await context?.close().catch(() => {})
    await rm(profile, { recursive: true, force: true }).catch(() => {})
  }
  try {
    // launchPersistentContext is playwright's way to pass a (fresh) user
    // data dir; it also satisfies flags honoured only with --user-data-dir.
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: [...LAUNCH_ARGS, ...args]
    })
    log(`launched ${executablePath}`)
    const page = context.pages()[0] ?? await context.newPage()
    page.on('console', (m) => log(`console.${m.type()}: ${m.text()}`))
    page.on('pageerror', (e) => log(`pageerror: ${e.stack ?? e}`))
    return { page, close }
  } catch (err) {
    await close()
    throw err
  }
}
