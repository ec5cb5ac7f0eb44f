#!/usr/bin/env bash
# Long mutation run (issue 18): tests/mutation.rs with N cases per reader (default 200000) and a base seed
# (ADAPTIR_MUTATION_SEED, default: the date, so successive soaks cover new cases). A failure prints the reader,
# seed, case and mutations, and the command that replays it.
#   scripts/mutate-soak.sh [N] [extra cargo test args, e.g. mutated_pickle]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200000}"
shift || true
export ADAPTIR_MUTATION_CASES="$n"
export ADAPTIR_MUTATION_SEED="${ADAPTIR_MUTATION_SEED:-$(date +%Y%m%d)}"
echo "mutate-soak: $n cases per reader, seed $ADAPTIR_MUTATION_SEED" >&2
exec cargo test --release --test mutation -- --nocapture --test-threads="$(nproc)" "$@"
