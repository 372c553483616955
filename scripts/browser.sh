#!/usr/bin/env bash
# Install Debian's Chromium for the usage page's browser test, when it is not there yet.
# Only Debian's package: no browser download of any other kind.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser: /usr/bin/chromium is missing; run 'apt-get install chromium' as root" >&2
    exit 1
fi
echo "browser: installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
