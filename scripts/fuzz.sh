#!/usr/bin/env bash
# Fuzzing on demand (docs/fuzzing.md): builds the cargo-fuzz targets of worker/fuzz and
# signalling/fuzz, then runs each on its corpus (corpus/<target>) and prints what it did.
#
#   scripts/fuzz.sh                      smoke run: every target, 60 s or 100000 executions each
#   scripts/fuzz.sh dtls jwt             only these targets
#   scripts/fuzz.sh --seconds 1800 --runs 10000000 dtls    a long run
#
# Installs cargo-fuzz when it is missing. New corpus entries land in corpus/<target> (minimise
# with `cargo fuzz cmin <target>` before committing); a crash or timeout leaves its input in
# artifacts/<target>/ and makes the script exit non-zero. Not part of scripts/test.sh: building
# the instrumented crates takes about 25 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
runs=100000
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

declare -A crate=(
  [stun]=worker/fuzz [rtp]=worker/fuzz [rtcp]=worker/fuzz [dtls]=worker/fuzz
  [rest_bodies]=worker/fuzz [rest_app]=worker/fuzz
  [jwt]=signalling/fuzz [payload]=signalling/fuzz [packet]=signalling/fuzz [socketio]=signalling/fuzz
)
[ ${#targets[@]} -gt 0 ] || targets=(stun rtp rtcp dtls rest_bodies rest_app jwt payload packet socketio)
for target in "${targets[@]}"; do
  [ -n "${crate[$target]:-}" ] || { echo "error: no fuzz target '$target' (one of: ${!crate[*]})" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
# cargo-fuzz needs nightly compiler flags (sanitizers, coverage); the stable toolchain allows
# them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
host=$(rustc -vV | sed -n 's/^host: //p')

built=()
for target in "${targets[@]}"; do
  dir=${crate[$target]}
  if [[ ! " ${built[*]} " == *" $dir "* ]]; then
    (cd "$dir" && cargo fuzz build)
    built+=("$dir")
  fi
done

failed=0
summary=()
for target in "${targets[@]}"; do
  dir=${crate[$target]}
  flags=(-max_total_time="$seconds" -runs="$runs" -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$target/")
  [ -f "$dir/$target.dict" ] && flags+=(-dict="$target.dict")
  case "$target" in rest_bodies|rest_app|payload|packet|socketio) flags+=(-max_len=16384) ;; esac
  mkdir -p "$dir/corpus/$target" "$dir/artifacts/$target"
  log=$(mktemp)
  echo "== $target"
  if (cd "$dir" && "target/$host/release/$target" "corpus/$target" "${flags[@]}") >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (input in $dir/artifacts/$target/)"
    failed=1
    grep -E "panicked|ERROR|SUMMARY" "$log" | head -5 || true
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  summary+=("$(printf '%-12s %10s execs %6s s %7s/s  %s' "$target" "${execs:-?}" "${took:-?}" "${rate:-?}" "$result")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit $failed
