# WuKong HA tasks. `just --list` shows them.

# Build everything and start a local 3-node cluster with a live status view (Ctrl-C stops it)
demo *ARGS:
    cargo build --release --workspace && ./target/release/wkctl demo {{ARGS}}

# Every benchmark, each on a fresh local cluster (release build): JSON results go to
# OUT, then one table. `idle` creates 100,000 channels and takes minutes. A bench that fails
# leaves its row empty (the `-` prefix); the others still run.
bench OUT="target/bench":
    cargo build --release --workspace
    # Flush the build's dirty pages (hundreds of MB) first, so their writeback does not share
    # the disk with the first benches' fsyncs.
    sync
    mkdir -p {{OUT}}
    -./target/release/wkctl --output json bench send --local --inflight 64 --channels 64 --size 100 --duration 10s > {{OUT}}/send-conc.json
    -./target/release/wkctl --output json bench send --local --mode seq --channels 64 --size 100 --duration 10s > {{OUT}}/send-seq.json
    -./target/release/wkctl --output json bench send --local --inflight 64 --channels 64 --size 100 --duration 300s --messages 200000 > {{OUT}}/disk.json
    -./target/release/wkctl --output json bench failover --rounds 3 > {{OUT}}/failover.json
    -./target/release/wkctl --output json bench failover --active 1000 --rounds 1 > {{OUT}}/failover-active.json
    -./target/release/wkctl --output json bench catchup --messages 50000 --users 50000 > {{OUT}}/catchup.json
    -./target/release/wkctl --output json bench drain --channels 1000 --messages 20 > {{OUT}}/drain.json
    -./target/release/wkctl --output json bench idle --channels 100000 --active 1000 > {{OUT}}/idle.json
    -./target/release/wkctl --output json bench deliver --clients 1000 --groups 10 --members 100 --duration 10s > {{OUT}}/deliver.json
    -./target/release/wkctl --output json bench deliver --clients 1000 --groups 10 --members 100 --duration 10s --rate 510 > {{OUT}}/deliver-50k.json
    -./target/release/wkctl --output json bench send --local --inflight 64 --channels 64 --subscribers 500 --size 100 --duration 10s > {{OUT}}/send-members.json
    -./target/release/wkctl --output json bench conversations --conversations 1000 --requests 200 > {{OUT}}/conversations.json
    ./target/release/wkctl bench report {{OUT}}

# The peers (etcd 3.4, NATS 2.9: ../shared/peers, installed from Debian packages when missing),
# then `just bench`, then one table with ours / etcd / NATS and the ratios.
bench-peers OUT="target/bench":
    command -v etcd >/dev/null && command -v nats-server >/dev/null && command -v protoc >/dev/null || apt-get install -y etcd-server etcd-client nats-server jq curl protobuf-compiler
    mkdir -p {{OUT}}/peers
    PEERS_OUT="$(pwd)/{{OUT}}/peers" ../shared/peers/run-all.sh
    just bench {{OUT}}
    ./target/release/wkctl bench report {{OUT}} --peers "$(ls -d {{OUT}}/peers/*/ | tail -1)"

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

# Fuzz TARGET (peer_frames, http_api, wkproto) for SECONDS on one core; needs nightly and
# `cargo install cargo-fuzz`. Starts from testdata/fuzz/TARGET, adds new inputs to fuzz/corpus/TARGET,
# writes a crashing input to fuzz/artifacts/TARGET (docs/SECURITY.md)
fuzz TARGET SECONDS:
    mkdir -p fuzz/corpus/{{TARGET}}
    cargo +nightly fuzz run -s none -a {{TARGET}} fuzz/corpus/{{TARGET}} testdata/fuzz/{{TARGET}} -- -max_total_time={{SECONDS}} -timeout=60 -rss_limit_mb=4096 -print_final_stats=1

# Keep in testdata/fuzz/TARGET only what adds coverage from a run's fuzz/corpus/TARGET
fuzz-keep TARGET:
    cargo +nightly fuzz run -s none -a {{TARGET}} testdata/fuzz/{{TARGET}} fuzz/corpus/{{TARGET}} -- -merge=1
