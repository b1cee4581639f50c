//! Who may send to a channel: WuKongIM's permission rules for a sender (spec section 4.5),
//! decided from one node's copy of the metadata. Pure: `api::send_message` reads the channel
//! and the lists and asks `may_send`; every surface that stores a message goes through it.

use std::collections::BTreeSet;

use super::SenderLists;
use crate::channel::SYSTEM_UID;

/// What the metadata says about the channel a message is for.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A person channel: no record is needed; the recipient's own lists decide.
    Person { recipient: &'a SenderLists },
    /// Any other type: its subscribers (`None`: the channel was never created) and its lists.
    Group {
        subscribers: Option<&'a BTreeSet<String>>,
        lists: &'a SenderLists,
    },
}

/// Why a sender may not send; each is one of WuKongIM's SENDACK reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A group-like channel that was never created.
    ChannelNotExist,
    /// The sender does not subscribe to the group.
    SubscriberNotExist,
    /// The sender is on the channel's (or the recipient's) blacklist.
    InBlacklist,
    /// The channel's (or the recipient's) whitelist is not empty and lacks the sender.
    NotInWhitelist,
}

/// May `from_uid` send to `target`? System messages (`SYSTEM_UID`, an empty `from_uid` on
/// the HTTP API) always may. Otherwise, in WuKongIM's order: a group must exist; the
/// blacklist refuses; a group's sender must subscribe; a non-empty whitelist admits only its
/// uids. WuKongIM applies a person's whitelist only with `WhitelistOffOfPerson` off, and then
/// even when empty; here a person's whitelist, like a group's, counts once it is not empty.
pub fn may_send(from_uid: &str, target: Target<'_>) -> Result<(), Refusal> {
    if from_uid == SYSTEM_UID {
        return Ok(());
    }
    let (subscribers, lists) = match target {
        Target::Person { recipient } => (None, recipient),
        Target::Group {
            subscribers: None, ..
        } => return Err(Refusal::ChannelNotExist),
        Target::Group {
            subscribers: Some(s),
            lists,
        } => (Some(s), lists),
    };
    if lists.blacklist.contains(from_uid) {
        return Err(Refusal::InBlacklist);
    }
    if subscribers.is_some_and(|s| !s.contains(from_uid)) {
        return Err(Refusal::SubscriberNotExist);
    }
    if !lists.whitelist.is_empty() && !lists.whitelist.contains(from_uid) {
        return Err(Refusal::NotInWhitelist);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table-driven from testdata/permit.txt.
    #[test]
    fn permit_table() {
        let text = include_str!("../../../testdata/permit.txt");
        let uid = |u: &str| {
            if u == "(system)" {
                SYSTEM_UID.to_string()
            } else {
                u.to_string()
            }
        };
        let set = |f: &str| -> BTreeSet<String> {
            if f == "-" {
                BTreeSet::new()
            } else {
                f.split(',').map(uid).collect()
            }
        };
        let mut cases = 0;
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (input, want) = line.split_once("->").expect("->");
            let f: Vec<&str> = input.split_whitespace().collect();
            assert_eq!(f.len(), 5, "testdata/permit.txt line {}: {line}", no + 1);
            let subscribers = set(f[2]);
            let lists = SenderLists {
                blacklist: set(f[3]),
                whitelist: set(f[4]),
            };
            let target = match f[1] {
                "person" => Target::Person { recipient: &lists },
                "group" => Target::Group {
                    subscribers: Some(&subscribers),
                    lists: &lists,
                },
                "missing" => Target::Group {
                    subscribers: None,
                    lists: &lists,
                },
                other => panic!("testdata/permit.txt line {}: unknown channel {other}", no + 1),
            };
            let got = match may_send(&uid(f[0]), target) {
                Ok(()) => "ok".to_string(),
                Err(r) => format!("{r:?}"),
            };
            assert_eq!(got, want.trim(), "testdata/permit.txt line {}: {line}", no + 1);
            cases += 1;
        }
        assert!(cases >= 20, "only {cases} cases read");
    }
}
