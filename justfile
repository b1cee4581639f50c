# WuKong HA tasks. `just --list` shows them.

# Build everything and start a local 3-node cluster with a live status view (Ctrl-C stops it)
demo *ARGS:
    cargo build --release --workspace && ./target/release/wkctl demo {{ARGS}}

# Benchmarks (issue 7), each on a fresh local cluster: 64 in flight over 64 channels, one at a
# time, then 3 leader kills. Extra ARGS go to every run (e.g. `just bench --output json`).
bench *ARGS:
    cargo build --release --workspace
    ./target/release/wkctl bench send --local --inflight 64 --channels 64 --size 100 --duration 10s {{ARGS}}
    ./target/release/wkctl bench send --local --mode seq --channels 64 --size 100 --duration 10s {{ARGS}}
    ./target/release/wkctl bench failover --rounds 3 {{ARGS}}

# Run the whole test suite (what CI runs)
test:
    cargo test --workspace

# Formatting and lints, warnings are errors
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# A failover drill from testdata/drills (e.g. `just drill leader-kill-x3`); report, artifacts, exit 1 on FAIL
drill SCENARIO *ARGS:
    cargo build --workspace
    ./target/debug/wkctl drill run testdata/drills/{{SCENARIO}}.toml {{ARGS}}

# Randomised mix of the drills for MINUTES minutes, chosen by SEED (printed); not part of CI
soak SEED MINUTES:
    cargo build --workspace
    ./target/debug/wkctl drill soak --seed {{SEED}} --for {{MINUTES}}m

# Fuzz TARGET (peer_frames, http_api) for SECONDS on one core; needs nightly and
# `cargo install cargo-fuzz`. Starts from testdata/fuzz/TARGET, adds new inputs to fuzz/corpus/TARGET,
# writes a crashing input to fuzz/artifacts/TARGET (docs/SECURITY.md)
fuzz TARGET SECONDS:
    mkdir -p fuzz/corpus/{{TARGET}}
    cargo +nightly fuzz run -s none -a {{TARGET}} fuzz/corpus/{{TARGET}} testdata/fuzz/{{TARGET}} -- -max_total_time={{SECONDS}} -timeout=60 -rss_limit_mb=4096 -print_final_stats=1

# Keep in testdata/fuzz/TARGET only what adds coverage from a run's fuzz/corpus/TARGET
fuzz-keep TARGET:
    cargo +nightly fuzz run -s none -a {{TARGET}} testdata/fuzz/{{TARGET}} fuzz/corpus/{{TARGET}} -- -merge=1
