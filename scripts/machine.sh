#!/usr/bin/env bash
# One line saying which machine a benchmark ran on, for the head of its log: time, CPU model, CPU count, the CPU's
# integer / bf16 extensions (int8 speed depends on them: VNNI, AMX) and the load average.
#   echo "== $(bash scripts/machine.sh)"
echo "$(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') $(nproc) CPUs, integer/bf16 extensions: $(grep -o -E 'avx512_vnni|avx_vnni|avx512_bf16|amx_int8|amx_bf16' /proc/cpuinfo | sort -u | paste -sd' ' | grep . || echo none), load $(cut -d' ' -f1-3 /proc/loadavg)"
