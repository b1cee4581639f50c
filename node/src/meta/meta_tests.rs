use super::*;
use crate::store::mem::MemKv;

fn key(id: &str) -> ChannelKey {
    ChannelKey {
        channel_id: id.into(),
        channel_type: 2,
    }
}

#[test]
fn channels_get_sequential_groups_and_placed_replicas() {
    let mut kv = MemKv::default();
    let members: BTreeSet<u64> = [1, 2, 3, 4].into();
    let ensure = |kv: &mut MemKv, id: &str| match apply(
        kv,
        &members,
        &MetaCmd::EnsureChannel {
            key: key(id),
            replication: 3,
        },
    ) {
        Ok(MetaResp::Channel(r)) => r,
        other => panic!("{other:?}"),
    };
    let a = ensure(&mut kv, "a");
    let b = ensure(&mut kv, "b");
    assert_eq!((a.group_id, b.group_id), (1, 2));
    assert_eq!(
        a.replicas,
        placement::place(&key("a").to_bytes(), [1, 2, 3, 4], 3)
    );
    // Ensuring again changes nothing, even with another membership.
    let again = apply(
        &mut kv,
        &[9].into(),
        &MetaCmd::EnsureChannel {
            key: key("a"),
            replication: 1,
        },
    )
    .expect("apply");
    assert_eq!(again, MetaResp::Channel(a));
}

#[test]
fn subscribers_add_reset_and_remove() {
    let mut kv = MemKv::default();
    let m: BTreeSet<u64> = [1].into();
    let up = |subs: &[&str], reset| MetaCmd::UpsertChannel {
        key: key("g"),
        subscribers: subs.iter().map(|s| s.to_string()).collect(),
        reset,
        replication: 3,
    };
    apply(&mut kv, &m, &up(&["a", "b"], false)).expect("apply");
    apply(&mut kv, &m, &up(&["c"], false)).expect("apply");
    let subs = |kv: &MemKv| {
        get_channel(kv, &key("g"))
            .expect("read")
            .expect("exists")
            .subscribers
    };
    assert_eq!(subs(&kv), ["a", "b", "c"].iter().map(|s| s.to_string()).collect());
    apply(
        &mut kv,
        &m,
        &MetaCmd::RemoveSubscribers {
            key: key("g"),
            subscribers: vec!["b".into(), "zz".into()],
        },
    )
    .expect("apply");
    assert_eq!(subs(&kv), ["a", "c"].iter().map(|s| s.to_string()).collect());
    let of = |kv: &MemKv, uid: &str| channels_of(kv, uid).expect("read");
    assert_eq!((of(&kv, "a"), of(&kv, "b")), (vec![key("g")], vec![]));
    apply(&mut kv, &m, &up(&["x"], true)).expect("apply");
    assert_eq!(subs(&kv), ["x".to_string()].into());
    // The members index follows: a reset drops the old subscribers' rows.
    assert_eq!(
        (of(&kv, "a"), of(&kv, "c"), of(&kv, "x")),
        (vec![], vec![], vec![key("g")])
    );
    // Removing from a channel that does not exist is a no-op, not an error.
    let r = apply(
        &mut kv,
        &m,
        &MetaCmd::RemoveSubscribers {
            key: key("nope"),
            subscribers: vec![],
        },
    );
    assert!(matches!(r, Ok(MetaResp::Done)));
}

#[test]
fn tokens_are_kept_per_device_flag() {
    let mut kv = MemKv::default();
    let m: BTreeSet<u64> = [1].into();
    let set = |flag, token: &str| MetaCmd::SetToken {
        uid: "u".into(),
        token: token.into(),
        device_flag: flag,
        device_level: 1,
    };
    apply(&mut kv, &m, &set(0, "app")).expect("apply");
    apply(&mut kv, &m, &set(1, "web")).expect("apply");
    apply(&mut kv, &m, &set(0, "app2")).expect("apply");
    let u = get_user(&kv, "u").expect("read").expect("exists");
    assert_eq!(u.devices.len(), 2);
    assert_eq!(u.devices[&0].token, "app2");
}

#[test]
fn replica_sets_are_recorded_one_by_one_or_in_a_batch() {
    let mut kv = MemKv::default();
    let members: BTreeSet<u64> = [1, 2, 3, 4].into();
    for id in ["a", "b"] {
        let cmd = MetaCmd::EnsureChannel {
            key: key(id),
            replication: 3,
        };
        apply(&mut kv, &members, &cmd).expect("apply");
    }
    let one = apply(
        &mut kv,
        &members,
        &MetaCmd::SetReplicas {
            key: key("a"),
            replicas: vec![4, 1, 2],
        },
    )
    .expect("apply");
    let MetaResp::Channel(a) = one else {
        panic!("{one:?}")
    };
    assert_eq!(a.replicas, vec![4, 1, 2]);
    let batch = MetaCmd::SetReplicasBatch {
        updates: vec![
            (key("b"), vec![2, 3, 4]),
            (key("missing"), vec![1]),
            (key("a"), vec![1, 2, 3]),
        ],
    };
    let MetaResp::Channels(recs) = apply(&mut kv, &members, &batch).expect("apply") else {
        panic!("a batch answers one record per update")
    };
    let got: Vec<Option<Vec<u64>>> = recs
        .iter()
        .map(|r| r.as_ref().map(|r| r.replicas.clone()))
        .collect();
    assert_eq!(got, vec![Some(vec![2, 3, 4]), None, Some(vec![1, 2, 3])]);
    for (id, want) in [("a", vec![1, 2, 3]), ("b", vec![2, 3, 4])] {
        let rec = get_channel(&kv, &key(id)).expect("read").expect("exists");
        assert_eq!(rec.replicas, want, "{id}");
    }
    assert_eq!(get_channel(&kv, &key("missing")).expect("read"), None);
}

#[test]
fn sender_lists_add_remove_set_and_vanish_when_empty() {
    let mut kv = MemKv::default();
    let members: BTreeSet<u64> = [1].into();
    let edit = |kv: &mut MemKv, list, edit, uids: &[&str]| {
        let cmd = MetaCmd::EditSenderList {
            key: key("g"),
            list,
            edit,
            uids: uids.iter().map(|u| u.to_string()).collect(),
        };
        assert_eq!(apply(kv, &members, &cmd).expect("apply"), MetaResp::Done);
        sender_lists(kv, &key("g")).expect("read")
    };
    let l = edit(&mut kv, SenderList::Blacklist, ListEdit::Add, &["a", "b"]);
    assert_eq!(l.blacklist, ["a".to_string(), "b".into()].into());
    assert!(l.whitelist.is_empty());
    let l = edit(&mut kv, SenderList::Whitelist, ListEdit::Set, &["c"]);
    assert_eq!(l.whitelist, ["c".to_string()].into());
    let l = edit(&mut kv, SenderList::Blacklist, ListEdit::Remove, &["a", "zz"]);
    assert_eq!(l.blacklist, ["b".to_string()].into());
    edit(&mut kv, SenderList::Blacklist, ListEdit::Set, &[]);
    edit(&mut kv, SenderList::Whitelist, ListEdit::Remove, &["c"]);
    // Both empty: no row is left, and the channel was never created by any of it.
    assert_eq!(kv.get(Table::Lists, &key("g").to_bytes()).expect("get"), None);
    assert_eq!(get_channel(&kv, &key("g")).expect("get"), None);
}

/// Both users of a person channel are indexed when the channel is created; no uid's rows
/// are mixed with a longer uid's that starts the same.
#[test]
fn person_channels_index_both_users() {
    let mut kv = MemKv::default();
    let person = ChannelKey {
        channel_id: "bob@al".into(),
        channel_type: 1,
    };
    apply(
        &mut kv,
        &[1].into(),
        &MetaCmd::EnsureChannel {
            key: person.clone(),
            replication: 1,
        },
    )
    .expect("apply");
    apply(
        &mut kv,
        &[1].into(),
        &MetaCmd::UpsertChannel {
            key: key("g"),
            subscribers: vec!["alice".into()],
            reset: false,
            replication: 1,
        },
    )
    .expect("apply");
    assert_eq!(channels_of(&kv, "al").expect("read"), vec![person.clone()]);
    assert_eq!(channels_of(&kv, "bob").expect("read"), vec![person]);
    assert_eq!(channels_of(&kv, "alice").expect("read"), vec![key("g")]);
    // The record without its subscribers reads the same group and replicas.
    let full = get_channel(&kv, &key("g")).expect("read").expect("exists");
    let place = channel_place(&kv, &key("g")).expect("read").expect("exists");
    assert_eq!(
        (place.key, place.group_id, place.replicas, place.subscribers.len()),
        (full.key, full.group_id, full.replicas, 0)
    );
}
