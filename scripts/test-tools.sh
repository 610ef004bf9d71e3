#!/usr/bin/env bash
# Makes sure the tools the tests drive are installed: promtool (Debian's prometheus),
# chromium (browser tests), and Debian's python3 with pytest, cloudpickle, requests, starlette and numpy (python/tests). Installs what is missing, quietly, when run as root.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The Python package's tests (python/tests) run on Debian's python3 with Debian's packages; no package index.
[ -x /usr/bin/python3 ] || missing+=(python3)
for pair in pytest:python3-pytest cloudpickle:python3-cloudpickle requests:python3-requests starlette:python3-starlette numpy:python3-numpy; do
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "test-tools: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
  exit 1
fi
echo "test-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get -o DPkg::Lock::Timeout=300 update -qq \
  && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  exit 1
fi
rm -f "$log"
