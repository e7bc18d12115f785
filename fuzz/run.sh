#!/usr/bin/env bash
# Fuzzes each target for a while (default 180 s each), on nightly with cargo-fuzz, then keeps
# the corpus small. Not run in CI; CI replays fuzz/corpus through `cargo test -p kairos-fuzz`.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# A crash leaves its input in fuzz/artifacts/<target>/: fix the bug, then copy the input into
# fuzz/regressions/<target>/ (never minimized away) so that the replay test keeps it.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-180}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cron duration job_json job_toml apply_file api_body)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "== $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536 -timeout=10
  cargo +nightly fuzz cmin "$target"
done
