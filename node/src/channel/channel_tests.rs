use super::*;
use crate::raft::{Entry, Request};
use crate::store::mem::MemKv;
use openraft::entry::RaftEntry;

pub(in crate::channel) fn msg(id: u64, from: &str, no: &str, payload: &[u8]) -> NewMessage {
    NewMessage {
        message_id: id,
        client_msg_no: no.into(),
        from_uid: from.into(),
        header: Header::default(),
        timestamp: 1,
        payload: payload.to_vec(),
    }
}

/// One channel group's log and state, as the log store and the state machine keep them.
pub(in crate::channel) struct Chan {
    pub(in crate::channel) kv: MemKv,
    pub(in crate::channel) g: u64,
    pub(in crate::channel) st: ChannelState,
    next_index: u64,
}

impl Chan {
    pub(in crate::channel) fn new(g: u64) -> Chan {
        Chan {
            kv: MemKv::default(),
            g,
            st: ChannelState::default(),
            next_index: 1,
        }
    }

    fn append(&mut self, e: &Entry) {
        let key = keys::group_u64(self.g, e.index());
        self.kv
            .put(
                Table::Log,
                &key,
                &crate::integrity::seal(&key, crate::store::encode(e)),
            )
            .expect("put");
        self.next_index += 1;
    }

    /// Append an entry of `cmd` and apply it.
    pub(in crate::channel) fn apply(&mut self, cmd: ChannelCmd) -> ChannelResp {
        let index = self.next_index;
        self.append(&Entry::new_normal(
            openraft::testing::log_id::<crate::raft::TypeConfig>(1, 1, index),
            Request::Channel(cmd.clone()),
        ));
        apply(&mut self.kv, self.g, &mut self.st, index, &cmd).expect("apply")
    }

    /// Append a Send entry of `msgs` and apply it.
    pub(in crate::channel) fn send(&mut self, msgs: Vec<NewMessage>) -> Vec<Sent> {
        match self.apply(ChannelCmd::Send(msgs)) {
            ChannelResp::Sent(s) => s,
            other => panic!("a send answered {other:?}"),
        }
    }

    pub(in crate::channel) fn sent(&mut self, m: NewMessage) -> Sent {
        self.send(vec![m])[0]
    }

    /// A blank entry (a new leader's), which holds no message.
    fn blank(&mut self) {
        let index = self.next_index;
        self.append(&Entry::new_blank(openraft::testing::log_id::<
            crate::raft::TypeConfig,
        >(2, 1, index)));
    }

    fn read(&self, lo: u64, hi: u64) -> Result<Vec<StoredMessage>> {
        read_messages(&self.kv, self.g, &self.st, lo, hi)
    }

    fn ids(&self, lo: u64, hi: u64) -> Vec<u64> {
        self.read(lo, hi)
            .expect("read")
            .iter()
            .map(|m| m.message_id)
            .collect()
    }
}

#[test]
fn seqs_are_contiguous_and_retries_are_deduplicated() {
    let mut c = Chan::new(1);
    let a = c.sent(msg(100, "alice", "c1", b"x"));
    let b = c.sent(msg(101, "alice", "c2", b"y"));
    assert_eq!((a.message_seq, b.message_seq), (1, 2));
    let retry = c.sent(msg(999, "alice", "c1", b"x"));
    assert_eq!(
        retry,
        Sent {
            message_id: 100,
            message_seq: 1,
            duplicate: true
        }
    );
    // The same client_msg_no from another sender, or in another channel, is another message.
    assert_eq!(c.sent(msg(102, "bob", "c1", b"z")).message_seq, 3);
    assert_eq!(Chan::new(2).sent(msg(103, "alice", "c1", b"x")).message_seq, 1);
    assert_eq!(c.st.last_seq, 3);
    assert_eq!(c.ids(1, 3), vec![100, 101, 102]);
    let m = &c.read(2, 2).expect("read")[0];
    assert_eq!(
        (m.message_seq, m.payload.as_slice(), m.from_uid.as_str()),
        (2, &b"y"[..], "alice")
    );
}

#[test]
fn duplicates_inside_one_batch_are_caught() {
    let mut c = Chan::new(1);
    let s = c.send(vec![msg(1, "a", "same", b"1"), msg(2, "a", "same", b"1")]);
    assert_eq!(
        s[1],
        Sent {
            message_id: 1,
            message_seq: 1,
            duplicate: true
        }
    );
    assert_eq!(c.st.last_seq, 1);
    assert_eq!(c.ids(1, 1), vec![1]);
}

/// Seqs map to the right messages whatever the log holds between them: runs of one message
/// per entry, batches with and without duplicates, blank entries.
#[test]
fn every_seq_reads_back_its_message_across_spans() {
    let mut c = Chan::new(7);
    let mut want = Vec::new();
    let mut id = 0u64;
    let mut next = |tag: &str| {
        id += 1;
        msg(id, "u", &format!("{tag}{id}"), &id.to_be_bytes())
    };
    for _ in 0..3 {
        let m = next("a");
        want.push(m.message_id);
        c.sent(m);
    }
    c.blank();
    for _ in 0..2 {
        let m = next("b");
        want.push(m.message_id);
        c.sent(m);
    }
    // A batch whose middle message repeats seq 1: only the other two are stored.
    let (x, y) = (next("c"), next("c"));
    want.extend([x.message_id, y.message_id]);
    c.send(vec![x, msg(999, "u", "a1", b""), y]);
    // A batch of new messages only, then single messages again.
    let batch: Vec<NewMessage> = (0..3).map(|_| next("d")).collect();
    want.extend(batch.iter().map(|m| m.message_id));
    c.send(batch);
    for _ in 0..2 {
        let m = next("e");
        want.push(m.message_id);
        c.sent(m);
    }
    assert_eq!(c.st.last_seq, want.len() as u64);
    for lo in 1..=want.len() as u64 {
        for hi in lo..=want.len() as u64 {
            assert_eq!(c.ids(lo, hi), want[(lo - 1) as usize..hi as usize], "{lo}..={hi}");
        }
    }
    // A run of single messages costs one span row, however long.
    let spans =
        c.kv.range(
            Table::Spans,
            &keys::group(7),
            &keys::prefix_end(&keys::group(7)),
            usize::MAX,
            false,
        )
        .expect("spans");
    assert_eq!(spans.len(), 5, "a1.., b.., the two batches, e..");
    let scan = scan_messages(&c.kv, 7, &c.st, c.st.last_seq).expect("scan");
    assert_eq!((scan.rows, scan.checksum), (c.st.last_seq, c.st.checksum));
}

/// Dedup rows are keyed by a hash: a seq listed under the same hash whose message is another
/// (a collision) does not make the new message a duplicate.
#[test]
fn a_dedup_hash_collision_is_not_a_duplicate() {
    let mut c = Chan::new(1);
    c.sent(msg(1, "alice", "one", b"x"));
    // Pretend ("bob", "two") hashes like ("alice", "one").
    let key = keys::dedup(1, "bob", "two");
    c.kv.put(Table::Dedup, &key, &crate::store::encode(&vec![1u64]))
        .expect("put");
    let s = c.sent(msg(2, "bob", "two", b"y"));
    assert_eq!((s.message_seq, s.duplicate), (2, false));
    assert_eq!(c.sent(msg(3, "bob", "two", b"y")).message_seq, 2, "now it is one");
}

/// Archived messages (a restore) and logged ones read as one sequence.
#[test]
fn archived_messages_precede_the_log() {
    let mut c = Chan::new(3);
    for seq in 1..=2u64 {
        let m = StoredMessage::new(seq, &msg(50 + seq, "u", &format!("old{seq}"), b"o"));
        let key = keys::group_u64(3, seq);
        c.kv.put(
            Table::Msgs,
            &key,
            &crate::integrity::seal(&key, crate::store::encode(&m)),
        )
        .expect("put");
        c.st.checksum = xxhash_rust::xxh3::xxh3_64_with_seed(&crate::store::encode(&m), c.st.checksum);
    }
    (c.st.last_seq, c.st.archived) = (2, 2);
    assert_eq!(c.sent(msg(60, "u", "new", b"n")).message_seq, 3);
    assert_eq!(c.ids(1, 3), vec![51, 52, 60]);
    let scan = scan_messages(&c.kv, 3, &c.st, 3).expect("scan");
    assert_eq!(scan.checksum, c.st.checksum);
}

#[test]
fn checksums_agree_only_on_identical_histories() {
    let run = |payloads: &[&[u8]]| {
        let mut c = Chan::new(1);
        for (i, p) in payloads.iter().enumerate() {
            c.sent(msg(i as u64, "a", &i.to_string(), p));
        }
        c.st.checksum
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
    let mut c = Chan::new(1);
    for i in 0..5u64 {
        c.sent(msg(100 + i, "alice", &format!("c{i}"), b"payload"));
    }
    let scan = scan_messages(&c.kv, 1, &c.st, c.st.last_seq).expect("intact");
    assert_eq!((scan.rows, scan.checksum), (5, c.st.checksum));
    // Flip one payload byte of seq 3 (log entry 3), as a bad disk would.
    let key = keys::group_u64(1, 3);
    let mut row = c.kv.get(Table::Log, &key).expect("get").expect("row");
    let at = row.len() - crate::integrity::SEAL_LEN - 2;
    row[at] ^= 0x20;
    c.kv.put(Table::Log, &key, &row).expect("put");
    assert!(matches!(
        c.read(1, 5),
        Err(crate::store::StoreError::Corrupt { .. })
    ));
    assert_eq!(c.read(4, 5).expect("other rows intact").len(), 2);
    assert!(scan_messages(&c.kv, 1, &c.st, 5).is_err());
    assert!(
        scan_messages(&c.kv, 1, &c.st, 2).is_ok(),
        "a scan up to a common seq stops before it"
    );
    // A missing row is caught too.
    c.kv.delete(Table::Log, &keys::group_u64(1, 4)).expect("delete");
    assert!(scan_messages(&c.kv, 1, &c.st, 2).is_ok());
    assert!(c.read(4, 5).is_err());
}
