#!/usr/bin/env bash
# Installs what the bench/peers JS interop tests need, idempotently:
#   - Node >= 20 and npm (checked; installed from apt only if absent)
#   - node_modules from package-lock.json (npm ci, skipped when up to date)
#   - Chromium from Debian (apt-get, skipped when present or SKIP_BROWSER=1)
# Usage: bash bench/peers/js/setup.sh    (from anywhere; run as root or with sudo)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
apt_updated=""

apt_install() {
	if [ -z "$apt_updated" ]; then
		$SUDO apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "setup: installing nodejs and npm from apt"
	apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
	echo "setup: node $(node --version) is too old: js-libp2p 3.x needs Node >= 20 (22 without polyfills)" >&2
	exit 1
fi

# npm ci wipes node_modules; skip it when the installed tree matches the
# lockfile (npm records the installed tree in node_modules/.package-lock.json).
if [ -f node_modules/.package-lock.json ] &&
	node -e '
		const fs = require("fs")
		const want = JSON.parse(fs.readFileSync("package-lock.json")).packages
		const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json")).packages
		for (const [k, v] of Object.entries(want)) {
			if (k === "") continue
			if (!have[k] && v.optional) continue // binary for another platform
			if (!have[k] || have[k].version !== v.version) process.exit(1)
		}' 2>/dev/null; then
	echo "setup: node_modules up to date"
else
	echo "setup: npm ci"
	npm ci --no-audit --no-fund
fi

if [ "${SKIP_BROWSER:-}" = 1 ]; then
	echo "setup: SKIP_BROWSER=1, not checking chromium"
elif [ -x "$CHROMIUM" ]; then
	echo "setup: $("$CHROMIUM" --version 2>/dev/null | tail -1)"
else
	echo "setup: installing chromium from apt"
	apt_install chromium
	"$CHROMIUM" --version | tail -1
fi

node -e 'import("playwright-core").then(() => import("esbuild")).then(() => console.log("setup: ok"))'
