#!/usr/bin/env bash
# The project's test command (README quick start; .ci/run calls it): install ONNX Runtime 1.31.1 into .venv/
# (idempotent, needs python3), then build once in release and run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-ort.sh
# The tests write their scratch files under std::env::temp_dir(), in folders named by process id that they do not
# all remove (about 1 GB a run). Give this run a folder of its own: removed when every test passes, kept (and named)
# when one fails, so that repeated runs do not fill /tmp and a failure's files stay to be read.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/adaptir-tests.XXXXXX")
if TMPDIR=$scratch cargo test --release --workspace "$@"; then
    rm -rf "$scratch"
else
    rc=$?
    echo "scripts/test.sh: a test failed; its scratch files are in $scratch" >&2
    exit $rc
fi
