use super::*;
use crate::channel::ChannelCmd;
use crate::channel::tests::{Chan, msg};

/// Version `@T` or `@T+N` of the table (module doc of testdata/conversations.txt).
fn version(v: &str) -> u64 {
    if v == "0" {
        return 0;
    }
    let v = v.strip_prefix('@').expect("a version is 0 or @T[+N]");
    let (t, steps) = v.split_once('+').unwrap_or((v, "0"));
    let t: u64 = t.parse().expect("T");
    (ID_EPOCH_MS + t) * 1000 + steps.parse::<u64>().expect("N")
}

fn at(f: &str) -> u64 {
    ID_EPOCH_MS + f.strip_prefix('@').expect("@T").parse::<u64>().expect("T")
}

fn uid(u: &str) -> String {
    if u == "(system)" {
        crate::channel::SYSTEM_UID.to_string()
    } else {
        u.to_string()
    }
}

fn view(c: &Chan, uid: &str) -> ConvView {
    ConvView {
        last_seq: c.st.last_seq,
        read: read_state(&c.kv, c.g, uid).expect("read"),
        msg_version: clock(&c.kv, c.g).expect("clock").msg_version,
    }
}

/// Table-driven from testdata/conversations.txt, through the channel's own apply.
#[test]
fn conversation_table() {
    let text = include_str!("../../../testdata/conversations.txt");
    let mut c = Chan::new(7);
    let (mut cases, mut checks, mut next_no) = (1, 0, 0u64);
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        let here = format!("testdata/conversations.txt line {}: {line}", no + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "---" {
            c = Chan::new(7);
            cases += 1;
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let cmd = |op: ConvOp, t: &str| {
            ChannelCmd::Conversation(ConvCmd {
                uid: f[1].into(),
                op,
                at_ms: at(t),
            })
        };
        match f[0] {
            "send" => {
                next_no += 1;
                let id = (at(f[2]) - ID_EPOCH_MS) << 22;
                c.sent(msg(id, &uid(f[1]), &next_no.to_string(), b"hi"));
            }
            "set" => {
                c.apply(cmd(ConvOp::SetUnread(f[2].parse().expect("N")), f[3]));
            }
            "clear" => {
                c.apply(cmd(ConvOp::ClearUnread(f[2].parse().expect("SEQ")), f[3]));
            }
            "delete" => {
                c.apply(cmd(ConvOp::Delete, f[2]));
            }
            "expect" => {
                let v = view(&c, &uid(f[1]));
                for kv in &f[2..] {
                    let (k, want) = kv.split_once('=').unwrap_or_else(|| panic!("{here}: {kv}"));
                    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
                    let (got, want) = match k {
                        "last" => (v.last_seq.to_string(), want.to_string()),
                        "unread" => (v.unread().to_string(), want.to_string()),
                        "read" => (v.read.read_seq.to_string(), want.to_string()),
                        "visible" => (yes(v.visible()), want.to_string()),
                        "version" => (v.version().to_string(), version(want).to_string()),
                        "since" => {
                            let (since, want) = want.split_once(':').expect("since=V:yes|no");
                            (yes(v.changed_since(version(since))), want.to_string())
                        }
                        other => panic!("{here}: unknown key {other}"),
                    };
                    assert_eq!(got, want, "{here}: {k}");
                    checks += 1;
                }
            }
            other => panic!("{here}: unknown step {other}"),
        }
    }
    assert!(
        cases >= 7 && checks >= 40,
        "only {cases} cases, {checks} checks read"
    );
}

#[test]
fn person_peers() {
    for (fake, uid, want) in [
        ("alice@bob", "alice", Some("bob")),
        ("alice@bob", "bob", Some("alice")),
        ("alice@alice", "alice", Some("alice")),
        ("alice@bob", "carol", None),
        ("alicebob", "alice", None),
    ] {
        assert_eq!(person_peer(fake, uid).as_deref(), want, "{fake} as {uid}");
    }
    assert_eq!(person_parties("a@b"), Some(("a", "b")));
    assert_eq!(person_parties("a@b@c"), None);
    assert_eq!(person_parties("ab"), None);
}

/// A message batch from several senders writes one row per sender, never one per member.
#[test]
fn a_batch_writes_one_row_per_sender() {
    let mut c = Chan::new(3);
    c.send(vec![
        msg(1 << 22, "alice", "1", b"a"),
        msg(2 << 22, "bob", "2", b"b"),
        msg(3 << 22, "alice", "3", b"c"),
    ]);
    let convs = c.kv.rows_of(Table::Convs);
    assert_eq!(convs, 3, "clock + alice + bob");
    assert_eq!(read_state(&c.kv, 3, "alice").expect("read").read_seq, 3);
    assert_eq!(read_state(&c.kv, 3, "bob").expect("read").read_seq, 2);
}
