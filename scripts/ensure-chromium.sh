#!/usr/bin/env bash
# npm test's pretest step: test/dashboard.test.ts drives Debian's Chromium (/usr/bin/chromium)
# through playwright-core, which never downloads a browser. When it is missing, install it with
# apt as root; otherwise say what to run. Nothing here fetches a browser build from elsewhere.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "pretest: $CHROMIUM is missing (test/dashboard.test.ts needs it); installing Debian's chromium with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  if [ ! -x "$CHROMIUM" ]; then
    echo "pretest: apt-get installed chromium but $CHROMIUM is still missing" >&2
    exit 1
  fi
  echo "pretest: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)" >&2
  exit 0
fi

cat >&2 <<MSG
npm test needs Debian's Chromium at $CHROMIUM for test/dashboard.test.ts (driven by
playwright-core, which never downloads a browser), and it is not installed.
Install it, then run npm test again:

    sudo apt-get update && sudo apt-get install -y chromium

(npm test installs it by itself when run as root. To run every other test without it:
npx tsc --noEmit -p . && npx vitest run --exclude test/dashboard.test.ts)
MSG
exit 1
