#!/usr/bin/env node
// Usage: node browser.mjs <multiaddr> [options]
//
// Runs the same client as client.mjs inside headless Chromium: bundles
// page.mjs with esbuild, serves it from http://127.0.0.1:<free port>/ (a
// secure context that may still open ws:// to loopback), drives Chromium
// through playwright-core and prints the page's JSON summary on stdout.
//
//   <multiaddr>        target (or env TARGET), as for client.mjs
//   --hold N           (env HOLD_SECONDS) hold the connection open N seconds
//   --monitor-ms N     (env MONITOR_MS) connection-monitor ping interval
//   --pings N, --streams N, --bytes N   as for client.mjs
//   --chromium PATH    browser binary (env CHROMIUM, default /usr/bin/chromium)
//   --timeout-ms N     overall limit for the page (default 120000 + hold)
//   -q                 no page console or progress lines on stderr
//
// Exit 0 if the summary says ok, 1 otherwise.
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { extname, join } from 'node:path'
import { chromium } from 'playwright-core'
import { buildPage } from './build.mjs'

const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

function parseArgs (argv) {
  const o = {
    target: process.env.TARGET,
    hold: process.env.HOLD_SECONDS,
    monitorMs: process.env.MONITOR_MS,
    chromium: process.env.CHROMIUM || '/usr/bin/chromium'
  }
  const query = { '--hold': 'hold', '--monitor-ms': 'monitorMs', '--pings': 'pings', '--streams': 'streams', '--bytes': 'bytes' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-q') o.quiet = true
    else if (a === '-v') o.quiet = false // the default
    else if (a === '--chromium') o.chromium = argv[++i]
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i])
    else if (a in query) o[query[a]] = argv[++i]
    else if (a.startsWith('/')) o.target = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!o.target) throw new Error('usage: node browser.mjs <multiaddr> [--hold N] [--pings N] [--streams N] [--bytes N] [--chromium PATH] [-q]')
  o.timeoutMs ??= 120000 + 1000 * Number(o.hold ?? 0)
  return o
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json' }

function serve (dir) {
  const files = new Set(['/index.html', '/page.js', '/page.js.map'])
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

let o
let browser, server, profile
try {
  o = parseArgs(process.argv.slice(2))
  const t0 = performance.now()
  const log = !o.quiet ? (m) => process.stderr.write(`browser: +${Math.round(performance.now() - t0)}ms ${m}\n`) : () => {}
  const dist = await buildPage()
  log(`bundled ${dist}/page.js`)
  server = await serve(dist)
  const url = new URL(`http://127.0.0.1:${server.address().port}/`)
  for (const k of ['target', 'hold', 'monitorMs', 'pings', 'streams', 'bytes']) {
    if (o[k] !== undefined && o[k] !== '') url.searchParams.set(k, o[k])
  }
  profile = await mkdtemp(join(tmpdir(), 'swarmgate-chromium-'))
  // launchPersistentContext is playwright's way to pass a (fresh) user data dir.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium,
    headless: true,
    args: LAUNCH_ARGS
  })
  log(`launched ${o.chromium}`)
  const page = browser.pages()[0] ?? await browser.newPage()
  page.on('console', (m) => log(`console.${m.type()}: ${m.text()}`))
  page.on('pageerror', (e) => log(`pageerror: ${e.stack ?? e}`))
  log(`opening ${url}`)
  await page.goto(url.href)
  await page.waitForFunction(() => window.__summary !== undefined, null, { timeout: o.timeoutMs, polling: 200 })
  const summary = await page.evaluate(() => window.__summary)
  log('page finished')
  console.log(JSON.stringify(summary))
  process.exitCode = summary.ok === true ? 0 : 1
} catch (err) {
  process.stderr.write(`browser: error: ${err?.stack ?? err}\n`)
  console.log(JSON.stringify({ target: o?.target, ok: false, error: String(err?.message ?? err) }))
  process.exitCode = 1
} finally {
  await browser?.close().catch(() => {})
  server?.close()
  if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {})
}
