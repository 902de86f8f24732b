#!/usr/bin/env node
// Usage: node relay-browser.mjs <relay multiaddr with /p2p/> [options]
//
// js-libp2p in headless Chromium reserves a slot on a circuit relay v2 and
// echoes what others send it through the relay (relay-page.mjs, bundled
// with esbuild into a temporary directory, served from
// http://127.0.0.1:<free port>/, driven through playwright-core).
//
//   --spki B64         accept a TLS certificate whose public key has this
//                      SHA-256 SPKI fingerprint (base64, RFC 7469 pin):
//                      Chromium's --ignore-certificate-errors-spki-list,
//                      for a /tls/ws relay with a self-signed certificate.
//                      Only that key is accepted, every other certificate
//                      error still fails the connection.
//   --streams N        echo streams to serve (default 1); the page finishes
//                      once they are served and their dialers hung up
//   --timeout-ms N     limit for the page (default 60000)
//   --chromium PATH    browser binary (env CHROMIUM, default /usr/bin/chromium)
//   -q                 no page console or progress lines on stderr
//
// stdout: one JSON line {"ready": {peerId, circuitAddr, relayConn,
// reservation}} once the reservation is held (dial the browser then), and
// the JSON summary as the last line (with the page's console errors in
// consoleErrors). Exit 0 if the summary says ok.
import { copyFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { bundle } from './build.mjs'
import { DEFAULT_CHROMIUM, launchChromium, serveFiles } from './chromium.mjs'

function parseArgs (argv) {
  const o = { streams: 1, timeoutMs: 60000, chromium: process.env.CHROMIUM || DEFAULT_CHROMIUM }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-q') o.quiet = true
    else if (a === '--spki') o.spki = argv[++i]
    else if (a === '--streams') o.streams = Number(argv[++i])
    else if (a === '--timeout-ms') o.timeoutMs = Number(argv[++i])
    else if (a === '--chromium') o.chromium = argv[++i]
    else if (a.startsWith('/')) o.relay = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!o.relay) throw new Error('usage: node relay-browser.mjs <relay multiaddr> [--spki B64] [--streams N] [--timeout-ms N] [--chromium PATH] [-q]')
  return o
}

let o, chromium, server, dir
try {
  o = parseArgs(process.argv.slice(2))
  const t0 = performance.now()
  const log = !o.quiet ? (m) => process.stderr.write(`relay-browser: +${Math.round(performance.now() - t0)}ms ${m}\n`) : () => {}
  // A directory of its own: tests in other packages build dist/ at the
  // same time.
  dir = await mkdtemp(join(tmpdir(), 'swarmgate-relay-page-'))
  await bundle('relay-page', dir)
  await copyFile(join(dirname(fileURLToPath(import.meta.url)), 'relay.html'), join(dir, 'index.html'))
  log(`bundled ${dir}/relay-page.js`)
  server = await serveFiles(dir, ['/index.html', '/relay-page.js', '/relay-page.js.map'])
  const url = new URL(`http://127.0.0.1:${server.address().port}/`)
  url.searchParams.set('relay', o.relay)
  url.searchParams.set('streams', o.streams)
  url.searchParams.set('timeoutMs', o.timeoutMs)
  // Honoured only with --user-data-dir, which launchChromium passes.
  const args = o.spki ? [`--ignore-certificate-errors-spki-list=${o.spki}`] : []
  chromium = await launchChromium({ executablePath: o.chromium, args, log })
  const page = chromium.page
  // The browser's own errors (a refused certificate shows up only here:
  // the page sees a bare error Event from the WebSocket).
  const consoleErrors = []
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()) })
  log(`opening ${url}`)
  await page.goto(url.href)
  const wait = { timeout: o.timeoutMs + 5000, polling: 50 }
  await page.waitForFunction(() => window.__ready !== undefined || window.__summary !== undefined, null, wait)
  const ready = await page.evaluate(() => window.__ready)
  if (ready) {
    log('reservation held')
    console.log(JSON.stringify({ ready }))
  }
  await page.waitForFunction(() => window.__summary !== undefined, null, wait)
  const summary = { ...await page.evaluate(() => window.__summary), consoleErrors }
  log('page finished')
  console.log(JSON.stringify(summary))
  process.exitCode = summary.ok === true ? 0 : 1
} catch (err) {
  process.stderr.write(`relay-browser: error: ${err?.stack ?? err}\n`)
  console.log(JSON.stringify({ ok: false, error: String(err?.message ?? err) }))
  process.exitCode = 1
} finally {
  await chromium?.close()
  server?.close()
  if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {})
}
