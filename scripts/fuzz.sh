#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing of every parser of untrusted bytes with afl.rs
# (AFL++ on stable Rust), FUZZ_SECS seconds per target (default 60), targets given as
# arguments or all of them. Installs cargo-afl on first use (cargo install, then
# `cargo afl config --build`, which builds AFL++ from the source afl.rs ships).
# Findings land in target/fuzz/out/TARGET/default/{crashes,hangs}; the corpus grows
# in the same place and is the next run's starting point. Exits 1 on any crash or hang.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-60}
all=(cookie_codec cookie_header set_cookie proxy_header config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl" >&2
  cargo install --locked cargo-afl
fi
# AFL++ and its runtime, built once per afl.rs and Rust version (cargo install does it
# too; "already built" is the usual answer).
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; exit 1; }
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
# Not --locked: the targets build limpet's own crates, whose dependencies move.
(cd fuzz && cargo afl build --release)

# Run unattended: no UI, no CPU-governor or core-pattern demands on a shared machine.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_NO_AFFINITY=1
failed=0
mkdir -p target/fuzz/out
for t in "${targets[@]}"; do
  out=target/fuzz/out/$t
  # Resume from the corpus of the last run when there is one.
  input=fuzz/seeds/$t
  [ -d "$out/default/queue" ] && input=-
  echo "fuzz: $t for ${secs}s" >&2
  cargo afl fuzz -V "$secs" -i "$input" -o "$out" -- "$CARGO_TARGET_DIR/release/$t" >"$out.log" 2>&1 || {
    echo "fuzz: afl-fuzz failed on $t; see $out.log" >&2; tail -20 "$out.log" >&2; failed=1; continue; }
  stats=$out/default/fuzzer_stats
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  edges=$(awk -F' *: *' '$1=="edges_found"{print $2}' "$stats")
  corpus=$(awk -F' *: *' '$1=="corpus_count"{print $2}' "$stats")
  crashes=$(find "$out/default/crashes" -type f ! -name README.txt | wc -l)
  hangs=$(find "$out/default/hangs" -type f | wc -l)
  printf 'fuzz: %-14s %10s execs  %6s edges  corpus %5s  crashes %s  hangs %s\n' \
    "$t" "$execs" "$edges" "$corpus" "$crashes" "$hangs"
  if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
    echo "fuzz: $t: replay with: $CARGO_TARGET_DIR/release/$t < FILE (files in $out/default/crashes, hangs)" >&2
    failed=1
  fi
done
exit $failed
