#!/usr/bin/env bash
# Regenerates the Python code for every .proto under protos/ into OUTDIR (default libs/api/src).
# Generated files are committed; the test run compares them with a fresh generation (drift check).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/libs/api/src}"
python="${PYTHON:-python}"
mkdir -p "$out/contentpipe/api"
out="$(cd "$out" && pwd)"
protos=$(cd "$root/protos" && find contentpipe -name '*.proto' | LC_ALL=C sort)
wkt="$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
(cd "$root/protos" && "$python" -m grpc_tools.protoc -I . -I "$wkt" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  --include_source_info --descriptor_set_out="$out/contentpipe/api/descriptor_set.binpb" $protos)
# descriptor_set.binpb keeps the proto comments (the _pb2 modules drop them) so server reflection can serve the
# documented contract to `grpcurl describe`.
# Regular packages (not namespace packages) below contentpipe.api, so tools resolve them the same way everywhere.
find "$out/contentpipe/api" -type d | while read -r dir; do
  [ -f "$dir/__init__.py" ] || : > "$dir/__init__.py"
done
: > "$out/contentpipe/api/py.typed"
