#!/usr/bin/env bash
# Here (no GPU): fetch, for the device machine's Python 3.12, the wheels of every package this
# project needs that its image lacks (ray, codecarbon, SQLAlchemy, alembic and their own needs),
# tar them and cut the tar into parts that each fit one device call's 64 MiB carry:
# .whl/part-aa, .whl/part-ab, ... (.whl/ is git-ignored). bench/README.md says how to carry them.
#
#     bash bench/gpu_wheels.sh [PART_MB]   # default 56 MB parts (leaves room for the tree)
set -euo pipefail
cd "$(dirname "$0")/.."
PART_MB=${1:-56}
PY=${PY:-/work/main/.venv/bin/python}
# Not in the device image's package list (/work/.library/device/KINDS.md), pinned as this
# project's venv has them: `pip list` here minus that list.
PKGS="ray==2.60.0 codecarbon==3.3.2 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
aiohttp-cors==0.8.1 annotated-types==0.8.0 arrow==1.4.0 colorful==0.5.8
jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
opencensus==0.11.4 opencensus-context==0.1.3 opentelemetry-api==1.45.2
opentelemetry-exporter-prometheus==0.66b2 opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 google-api-core==2.44.0
google-auth==2.62.2 googleapis-common-protos==1.76.0 proto-plus==1.29.0 pyasn1==0.6.5
pyasn1_modules==0.4.2 platformdirs==4.14.7 prompt_toolkit==3.0.53 pycountry==26.2.16
pydantic==2.14.3 pydantic_core==2.50.4 typing-inspection==0.4.5 questionary==2.1.1
RapidFuzz==3.14.6 smart_open==9.0.2 tensorboardX==2.6.5 tzdata==2026.6 wcwidth==0.9.4
py-spy==0.4.3 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 Authlib==1.9.9 joserfc==1.8.0
truststore==0.10.5 distlib==0.4.4 virtualenv==21.15.8 python-discovery==1.9.5
httpx2==2.16.2 httpcore2==2.16.2"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || true  # .whl/ is in .gitignore already
mkdir -p .whl/wheels
PLAT=""
for n in 17 24 27 28 31 34 35; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
for pkg in $PKGS; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl/wheels "$pkg" || echo "warning: no wheel for $pkg" >&2
done
rm -f .whl/part-*
tar -C .whl -cf - wheels | split -b "${PART_MB}m" - .whl/part-
ls -la .whl/part-*
echo "carry each .whl/part-* in its own device call (bench/README.md, GPU check)"
