//! The checkers must catch planted bugs, or a green run would mean nothing.

use doozer_verify::checks::check;
use doozer_verify::history::{Change, History, Op, Record, Ret, WatchLog, NEVER};
use std::collections::BTreeMap;

fn set(client: usize, key: &str, cond: i64, value: &str, ret: Ret, invoked: u64, completed: u64) -> Record {
    Record { client, node: 0, op: Op::Set { key: key.into(), cond, value: value.into() }, ret, invoked, completed }
}

fn del(client: usize, key: &str, cond: i64, ret: Ret, invoked: u64, completed: u64) -> Record {
    Record { client, node: 0, op: Op::Del { key: key.into(), cond }, ret, invoked, completed }
}

fn get(client: usize, key: &str, rev: Option<i64>, value: Option<&str>, file_rev: i64, t: (u64, u64)) -> Record {
    let ret = Ret::Got { value: value.map(String::from), rev: file_rev };
    Record { client, node: 0, op: Op::Get { key: key.into(), rev }, ret, invoked: t.0, completed: t.1 }
}

fn change(rev: i64, path: &str, value: Option<&str>) -> Change {
    Change { rev, path: path.into(), value: value.map(String::from) }
}

/// A small correct history: two clients, CAS, a mismatch, a delete, an
/// unknown-outcome write that happened and one that did not, reads, a watch.
fn clean() -> History {
    let log = vec![
        change(1, "/k", Some("a")),
        change(2, "/k", Some("b")),
        change(3, "/j", Some("x")),
        change(4, "/k", None),
        change(5, "/k", Some("c")),
    ];
    let records = vec![
        set(0, "/k", 0, "a", Ret::Set(1), 0, 10),
        set(1, "/k", 1, "b", Ret::Set(2), 5, 20),
        set(0, "/k", 0, "z", Ret::Mismatch, 12, 25),
        set(1, "/j", -1, "x", Ret::Unknown("timeout".into()), 21, NEVER),
        set(0, "/j", 0, "never", Ret::Unknown("lost".into()), 26, NEVER),
        del(0, "/k", 2, Ret::Del, 30, 40),
        set(1, "/k", 0, "c", Ret::Set(5), 41, 50),
        get(0, "/k", Some(2), Some("b"), 2, (51, 52)),
        get(0, "/k", None, Some("c"), 5, (53, 54)),
        get(1, "/k", Some(4), None, 0, (53, 55)),
    ];
    let watches = vec![WatchLog {
        gaps: Vec::new(),
        glob: "/k".into(),
        from: 2,
        events: vec![change(2, "/k", Some("b")), change(4, "/k", None), change(5, "/k", Some("c"))],
    }];
    let tree: BTreeMap<String, (i64, String)> =
        [("/j".to_string(), (3, "x".to_string())), ("/k".to_string(), (5, "c".to_string()))].into();
    History { records, log, watches, finals: vec![tree.clone(), tree], final_rev: 5, ..History::default() }
}

fn anomalies(h: &History) -> Vec<String> {
    check(h).anomalies
}

#[test]
fn a_correct_history_passes() {
    let r = check(&clean());
    assert!(r.ok(), "{:#?}", r.anomalies);
    assert_eq!((r.ops, r.keys), (10, 2));
}

#[test]
fn catches_a_lost_write() {
    let mut h = clean();
    h.log[1].value = Some("other".into()); // the acknowledged "b" is not what the log has
    let a = anomalies(&h);
    assert!(a.iter().any(|x| x.contains("lost write")), "{a:#?}");
}

#[test]
fn catches_a_stale_read_at_a_revision() {
    let mut h = clean();
    h.records[7] = get(0, "/k", Some(2), Some("a"), 1, (51, 52));
    let a = anomalies(&h);
    assert!(a.iter().any(|x| x.contains("read at revision 2")), "{a:#?}");
}

#[test]
fn catches_a_read_going_back_in_time() {
    let mut h = clean();
    // The same client, same node: "c" (rev 5), then "b" (rev 2, replaced at 4).
    h.records.push(get(0, "/k", None, Some("b"), 2, (60, 61)));
    let a = anomalies(&h);
    assert!(a.iter().any(|x| x.contains("stale read")), "{a:#?}");
}

#[test]
fn catches_a_read_of_a_state_that_never_existed() {
    let mut h = clean();
    h.records.push(get(1, "/k", None, Some("phantom"), 2, (60, 61)));
    assert!(anomalies(&h).iter().any(|x| x.contains("never existed")));
}

#[test]
fn catches_a_duplicated_and_a_missed_watch_event() {
    let mut h = clean();
    h.watches[0].events.insert(1, change(2, "/k", Some("b")));
    assert!(anomalies(&h).iter().any(|x| x.contains("out of order or repeated")));
    let mut h = clean();
    h.watches[0].events.remove(1);
    let a = anomalies(&h);
    assert!(a.iter().any(|x| x.contains("missed revisions [4]")), "{a:#?}");
}

#[test]
fn catches_two_winners_of_one_create() {
    // Two concurrent creates (rev 0) of /n both "succeed": not linearizable.
    let mut h = clean();
    h.log.push(change(6, "/n", Some("p")));
    h.log.push(change(7, "/n", Some("q")));
    h.records.push(set(0, "/n", 0, "p", Ret::Set(6), 100, 110));
    h.records.push(set(1, "/n", 0, "q", Ret::Set(7), 101, 111));
    h.records.push(set(2, "/n", -1, "r", Ret::Unknown("x".into()), 90, NEVER));
    h.final_rev = 7;
    for t in h.finals.iter_mut() {
        t.insert("/n".into(), (7, "q".into()));
    }
    let a = anomalies(&h);
    let found = a.iter().find(|x| x.contains("not linearizable on /n")).expect("caught");
    // The minimal sub-history is the two creates, nothing else.
    assert_eq!(found.lines().count(), 3, "{found}");
}

#[test]
fn catches_a_mismatch_that_should_have_succeeded() {
    let mut h = clean();
    // /k is missing from 4 to 5; a create at that time cannot mismatch.
    h.records.push(set(2, "/k", 0, "w", Ret::Mismatch, 42, 43));
    h.records[6] = set(1, "/k", 0, "c", Ret::Set(5), 44, 50);
    assert!(anomalies(&h).iter().any(|x| x.contains("not linearizable on /k")));
}

#[test]
fn catches_revisions_going_back_in_real_time() {
    let mut h = clean();
    // /j's write finished at revision 3 before /k's first write (revision 1) began.
    h.records[3] = set(1, "/j", -1, "x", Ret::Set(3), 0, 1);
    h.records[0] = set(0, "/k", 0, "a", Ret::Set(1), 2, 10);
    let a = anomalies(&h);
    assert!(a.iter().any(|x| x.contains("revisions go back in time")), "{a:#?}");
}

#[test]
fn catches_diverging_nodes_and_gaps_in_the_log() {
    let mut h = clean();
    h.finals[1].insert("/extra".into(), (9, "e".into()));
    assert!(anomalies(&h).iter().any(|x| x.contains("node 1's tree")));
    let mut h = clean();
    h.log.remove(2);
    assert!(anomalies(&h).iter().any(|x| x.contains("skips or repeats")));
}

#[test]
fn unknown_deletes_may_or_may_not_have_happened() {
    let mut h = clean();
    // An unknown delete of /j, and /j is still there at the end: fine.
    h.records.push(del(2, "/j", -1, Ret::Unknown("timeout".into()), 60, NEVER));
    assert!(check(&h).ok(), "{:#?}", check(&h).anomalies);
}

/// Builds a history that is linearizable by construction: run random
/// operations sequentially on a model of the store, give each a
/// linearization point, then widen every operation into a random window
/// around its point so many overlap. The checker must accept all of them.
#[test]
fn random_linearizable_histories_pass() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..40 {
        let mut rev = 0i64;
        let mut state: BTreeMap<String, (i64, String)> = BTreeMap::new();
        let (mut records, mut log) = (vec![], vec![]);
        for i in 0..300u64 {
            let key = format!("/k{}", rnd(3));
            let current = state.get(&key).map_or(0, |f| f.0);
            let cond = match rnd(4) {
                0 => -1,
                1 => current,
                2 => current.saturating_sub(1 + rnd(2) as i64),
                _ => 0,
            };
            let ok = cond == -1 || cond >= current;
            let point = i * 10;
            let (call, ret) = (point.saturating_sub(rnd(40)), point + rnd(40));
            if rnd(3) == 0 {
                let r = if ok { Ret::Del } else { Ret::Mismatch };
                if ok && state.remove(&key).is_some() {
                    rev += 1;
                    log.push(change(rev, &key, None));
                }
                records.push(del(i as usize % 5, &key, cond, r, call, ret));
            } else {
                let value = format!("v{round}-{i}");
                let r = if ok {
                    rev += 1;
                    log.push(change(rev, &key, Some(&value)));
                    state.insert(key.clone(), (rev, value.clone()));
                    Ret::Set(rev)
                } else {
                    Ret::Mismatch
                };
                records.push(set(i as usize % 5, &key, cond, &value, r, call, ret));
            }
        }
        let h = History { records, log, watches: vec![], finals: vec![state], final_rev: rev, ..History::default() };
        let r = check(&h);
        assert!(r.ok(), "round {round}: {:#?}", r.anomalies);
    }
}
