# WuKong HA tasks. `just --list` shows them.

# Build everything and start a local 3-node cluster with a live status view (Ctrl-C stops it)
demo *ARGS:
    cargo build --release --workspace && ./target/release/wkctl demo {{ARGS}}

# Run the whole test suite (what CI runs)
test:
    cargo test --workspace

# Formatting and lints, warnings are errors
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
