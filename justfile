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
