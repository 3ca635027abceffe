#!/usr/bin/env bash
# Install everything the tests need (V2Ray 4.34 and curl via apt when root), then run the
# whole trial suite. Extra arguments are passed to trial (default: every test in tests/).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v v2ray >/dev/null 2>&1 || missing+=(v2ray)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)  # dokodemo-door redirect tests
# nginx in front of UNIX sockets (tests/interop/test_ds_nginx.py)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)  # the dns outbound tests
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "Installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "The tests need: ${missing[*]}. Install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
if [ $# -eq 0 ]; then set -- tests; fi
exec python3 -m twisted.trial -j2 "$@"
