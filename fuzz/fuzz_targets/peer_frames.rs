//! Whatever bytes a peer sends on the cluster transport: the frame decoder (length prefix,
//! size limit, postcard), handshake frames (`Hello`, `Challenge`, `Proof`, `Refused`), and
//! the app RPCs and replies carried inside. Decoding may fail; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wknode::cluster::rpc::{AppReply, AppRpc};

fuzz_target!(|data: &[u8]| {
    for payload in wknode::raft::network::decode_peer_bytes(data) {
        decode_app(&payload);
    }
    // The app decoders straight from the input too, so the fuzzer need not build frames.
    decode_app(data);
});

fn decode_app(bytes: &[u8]) {
    if let Ok(rpc) = postcard::from_bytes::<AppRpc>(bytes) {
        let _ = format!("{rpc:?}");
        let _ = rpc.is_quick();
    }
    if let Ok(reply) = postcard::from_bytes::<AppReply>(bytes) {
        let _ = format!("{reply:?}");
    }
}
