use super::*;
use crate::store::mem::MemKv;

fn msg(id: u64, from: &str, no: &str, payload: &[u8]) -> NewMessage {
    NewMessage {
        message_id: id,
        client_msg_no: no.into(),
        from_uid: from.into(),
        header: Header::default(),
        timestamp: 1,
        payload: payload.to_vec(),
    }
}

fn sent(kv: &mut MemKv, g: u64, st: &mut ChannelState, m: NewMessage) -> Sent {
    match apply(kv, g, st, &ChannelCmd::Send(vec![m])).expect("apply") {
        ChannelResp::Sent(s) => s[0],
    }
}

#[test]
fn seqs_are_contiguous_and_retries_are_deduplicated() {
    let (mut kv, mut st) = (MemKv::default(), ChannelState::default());
    let a = sent(&mut kv, 1, &mut st, msg(100, "alice", "c1", b"x"));
    let b = sent(&mut kv, 1, &mut st, msg(101, "alice", "c2", b"y"));
    assert_eq!((a.message_seq, b.message_seq), (1, 2));
    let retry = sent(&mut kv, 1, &mut st, msg(999, "alice", "c1", b"x"));
    assert_eq!(
        retry,
        Sent {
            message_id: 100,
            message_seq: 1,
            duplicate: true
        }
    );
    // The same client_msg_no from another sender, or in another channel, is another message.
    assert_eq!(
        sent(&mut kv, 1, &mut st, msg(102, "bob", "c1", b"z")).message_seq,
        3
    );
    assert_eq!(
        sent(
            &mut kv,
            2,
            &mut ChannelState::default(),
            msg(103, "alice", "c1", b"x")
        )
        .message_seq,
        1
    );
    assert_eq!(st.last_seq, 3);
    let stored = read_messages(&kv, 1, 1, 3).expect("read");
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![100, 101, 102]
    );
}

#[test]
fn duplicates_inside_one_batch_are_caught() {
    let (mut kv, mut st) = (MemKv::default(), ChannelState::default());
    let cmd = ChannelCmd::Send(vec![msg(1, "a", "same", b"1"), msg(2, "a", "same", b"1")]);
    let ChannelResp::Sent(s) = apply(&mut kv, 1, &mut st, &cmd).expect("apply");
    assert_eq!(
        s[1],
        Sent {
            message_id: 1,
            message_seq: 1,
            duplicate: true
        }
    );
    assert_eq!(st.last_seq, 1);
}

#[test]
fn checksums_agree_only_on_identical_histories() {
    let run = |payloads: &[&[u8]]| {
        let (mut kv, mut st) = (MemKv::default(), ChannelState::default());
        for (i, p) in payloads.iter().enumerate() {
            sent(&mut kv, 1, &mut st, msg(i as u64, "a", &i.to_string(), p));
        }
        st.checksum
    };
    assert_eq!(run(&[b"a", b"b"]), run(&[b"a", b"b"]));
    assert_ne!(run(&[b"a", b"b"]), run(&[b"b", b"a"]));
    assert_ne!(run(&[b"a", b"b"]), run(&[b"a"]));
}

#[test]
fn person_channel_ids_match_wukongim() {
    let ab = person_channel_id("alice", "bob");
    assert_eq!(ab, person_channel_id("bob", "alice"));
    let (ha, hb) = (crc32fast::hash(b"alice"), crc32fast::hash(b"bob"));
    assert_eq!(ab, if ha > hb { "alice@bob" } else { "bob@alice" });
    assert_eq!(person_display_id(&ab, "alice"), "bob");
    assert_eq!(person_display_id(&ab, "bob"), "alice");
    assert_eq!(person_display_id("a@a", "a"), "a@a");
}

/// Table-driven from testdata/sync_ranges.txt.
#[test]
fn sync_ranges_table() {
    let text = include_str!("../../../testdata/sync_ranges.txt");
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (input, want) = line.split_once("->").expect("->");
        let f: Vec<&str> = input.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<u64>().expect("number");
        let got = sync_range(n(0), n(1), n(2), n(3), f[4] == "up");
        let want = match want.trim() {
            "none" => None,
            w => {
                let v: Vec<u64> = w.split_whitespace().map(|x| x.parse().expect("number")).collect();
                Some((v[0], v[1], v[2] == 1))
            }
        };
        assert_eq!(got, want, "testdata/sync_ranges.txt line {}: {line}", no + 1);
    }
}

#[test]
fn a_flipped_byte_is_never_read_and_scans_recompute_the_checksum() {
    let (mut kv, mut st) = (MemKv::default(), ChannelState::default());
    for i in 0..5u64 {
        sent(
            &mut kv,
            1,
            &mut st,
            msg(100 + i, "alice", &format!("c{i}"), b"payload"),
        );
    }
    let scan = scan_messages(&kv, 1, st.last_seq).expect("intact");
    assert_eq!((scan.rows, scan.checksum), (5, st.checksum));
    // Flip one payload byte of seq 3, as a bad disk would.
    let key = keys::group_u64(1, 3);
    let mut row = kv.get(Table::Msgs, &key).expect("get").expect("row");
    let at = row.len() - crate::integrity::SEAL_LEN - 2;
    row[at] ^= 0x20;
    kv.put(Table::Msgs, &key, &row).expect("put");
    assert!(matches!(
        read_messages(&kv, 1, 1, 5),
        Err(crate::store::StoreError::Corrupt { .. })
    ));
    assert_eq!(read_messages(&kv, 1, 4, 5).expect("other rows intact").len(), 2);
    assert!(scan_messages(&kv, 1, 5).is_err());
    assert!(
        scan_messages(&kv, 1, 2).is_ok(),
        "a scan up to a common seq stops before it"
    );
    // A missing row is caught too.
    kv.delete(Table::Msgs, &keys::group_u64(1, 4)).expect("delete");
    assert!(scan_messages(&kv, 1, 2).is_ok());
    assert!(read_messages(&kv, 1, 4, 5).is_err());
}
