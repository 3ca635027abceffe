#!/bin/sh
# Regenerate vtwist/app/api/v2raypb/ from V2Ray 4.34's .proto files (build time only).
#
#   apt-get install -y golang-v2ray-core-dev   # the .proto files
#   pip install grpcio-tools                   # protoc for Python (not a runtime dependency)
#   sh tools/gen_protos.sh
#
# Every .proto below the V2Ray source root (but testing/) becomes one flat module:
# app/stats/command/command.proto -> v2raypb/app_stats_command_command_pb2.py, with the
# imports between them rewritten to relative ones. Message and service names keep V2Ray's
# packages (v2ray.core.app.stats.command.QueryStatsRequest ...), so the wire is V2Ray's.
set -eu
SRC=${V2RAY_SRC:-/usr/share/gocode/src/v2ray.com/core}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$HERE/vtwist/app/api/v2raypb
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$SRC"
PROTOS=$(find . -name '*.proto' -not -path './testing/*' | sed 's|^\./||' | sort)
# shellcheck disable=SC2086
python3 -m grpc_tools.protoc -I. --python_out="$TMP" $PROTOS
rm -f "$OUT"/*_pb2.py
for proto in $PROTOS; do
    gen=$TMP/${proto%.proto}_pb2.py
    flat=$(echo "${proto%.proto}" | tr / _)_pb2.py
    # "from app.stats.command import x_pb2 as y" / "import config_pb2 as y" -> relative
    python3 - "$gen" "$OUT/$flat" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()
text = re.sub(r"^from ([\w.]+) import (\w+_pb2) as (\w+)$",
              lambda m: f"from . import {m.group(1).replace('.', '_')}_{m.group(2)} as {m.group(3)}",
              text, flags=re.M)
text = re.sub(r"^import (\w+_pb2) as (\w+)$", r"from . import \1 as \2", text, flags=re.M)
text = re.sub(r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '[\w.]+'", "BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__", text)
open(dst, "w").write(text)
PY
done
echo "generated $(ls "$OUT"/*_pb2.py | wc -l) modules in $OUT"
