#!/usr/bin/env bash
# Installs what the admin UI's browser test needs: Debian's Chromium and the pinned
# playwright-core from crates/hearth-server/tests/ui/package-lock.json. Playwright's own
# browser download is never used (this machine only reaches package registries), so the
# test drives /usr/bin/chromium. Idempotent and fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps-browser: /usr/bin/chromium is missing; run as root to install it" >&2
        exit 1
    fi
    echo "deps-browser: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only when the install fails.
    if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps-browser: node/npm are missing; run as root to install them" >&2
        exit 1
    fi
    echo "deps-browser: installing nodejs and npm" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
fi
# playwright-core needs node >= 20; Debian 12's own nodejs is 18, the machine image's is 20.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "deps-browser: node $(node --version) is too old: playwright-core needs node >= 20" >&2
    exit 1
fi

ui=crates/hearth-server/tests/ui
# `npm ci` wipes and reinstalls node_modules; skip it while the lockfile is unchanged.
stamp="$ui/node_modules/.lock-stamp"
if [ -f "$ui/node_modules/playwright-core/package.json" ] && [ -f "$stamp" ] &&
    cmp -s "$stamp" "$ui/package-lock.json"; then
    echo "deps-browser: node modules up to date" >&2
else
    echo "deps-browser: npm ci in $ui" >&2
    (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$ui/package-lock.json" "$stamp"
fi
