#!/usr/bin/env bash
# Kill soak (issue 18, docs/reliability.md): tests/kill.rs with N SIGKILLs per command (train, pretrain,
# export --golden, restore) instead of CI's 20, at a chosen seed. Usage: scripts/kill-soak.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
SEED="${2:-$RANDOM}"
echo "kill soak: $N kills per command, seed $SEED (rerun: scripts/kill-soak.sh $N $SEED)"
ADAPTIR_KILLS="$N" ADAPTIR_KILL_SEED="$SEED" cargo test --release --test kill -- --nocapture --test-threads=2 kill
