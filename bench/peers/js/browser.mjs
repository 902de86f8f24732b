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
//   --insecure-tls     accept the target's self-signed certificate (a loopback
//                      /tls/ws server without a real one): measurement only
//   --timeout-ms N     overall limit for the page (default 120000 + hold)
//   -q                 no page console or progress lines on stderr
//
// Exit 0 if the summary says ok, 1 otherwise.
import { buildPage } from './build.mjs'
import { DEFAULT_CHROMIUM, launchChromium, serveFiles } from './chromium.mjs'

function parseArgs (argv) {
  const o = {
    target: process.env.TARGET,
    hold: process.env.HOLD_SECONDS,
    monitorMs: process.env.MONITOR_MS,
    chromium: process.env.CHROMIUM || DEFAULT_CHROMIUM
  }
  const query = { '--hold': 'hold', '--monitor-ms': 'monitorMs', '--pings': 'pings', '--streams': 'streams', '--bytes': 'bytes' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-q') o.quiet = true
    else if (a === '-v') o.quiet = false // the default
    else if (a === '--chromium') o.chromium = argv[++i]
    else if (a === '--insecure-tls') o.insecureTLS = true
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i])
    else if (a in query) o[query[a]] = argv[++i]
    else if (a.startsWith('/')) o.target = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!o.target) throw new Error('usage: node browser.mjs <multiaddr> [--hold N] [--pings N] [--streams N] [--bytes N] [--chromium PATH] [-q]')
  o.timeoutMs ??= 120000 + 1000 * Number(o.hold ?? 0)
  return o
}

let o
let chromium, server
try {
  o = parseArgs(process.argv.slice(2))
  const t0 = performance.now()
  const log = !o.quiet ? (m) => process.stderr.write(`browser: +${Math.round(performance.now() - t0)}ms ${m}\n`) : () => {}
  const dist = await buildPage()
  log(`bundled ${dist}/page.js`)
  server = await serveFiles(dist, ['/index.html', '/page.js', '/page.js.map'])
  const url = new URL(`http://127.0.0.1:${server.address().port}/`)
  for (const k of ['target', 'hold', 'monitorMs', 'pings', 'streams', 'bytes']) {
    if (o[k] !== undefined && o[k] !== '') url.searchParams.set(k, o[k])
  }
  const args = o.insecureTLS ? ['--ignore-certificate-errors'] : []
  chromium = await launchChromium({ executablePath: o.chromium, args, log })
  const page = chromium.page
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
  await chromium?.close()
  server?.close()
}
