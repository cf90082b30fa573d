#!/usr/bin/env bash
# Runs the TypeScript SDK suite against a fresh `daytona server` (see tests/support). Needs
# Node.js 20 or later, which the SDK requires; prints SKIPPED on an older one. The SDK keeps
# its event socket open, so the runner exits once the tests are done (--test-force-exit).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1; then
    echo "SKIPPED: the TypeScript SDK suite needs Node.js 20 or later; node is not installed"
    exit 0
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "SKIPPED: the TypeScript SDK suite needs Node.js 20 or later; found $(node --version)"
    exit 0
fi

# playwright-core drives Debian's chromium; it must not download a browser of its own.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
python="${PYTHON:-python3}"
exec "$python" ../../support/daytona_server.py -- node --test --test-force-exit --test-concurrency=1 ./*.test.mjs
