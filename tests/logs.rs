//! doozerd's log at the default level: quiet while a peer is down (one WARN
//! when it goes, one INFO when it is back), node ids as `/ctl` shows them,
//! and `--log-format json` for log collectors.

mod common;

use common::{eventually, Doozerd};
use std::time::Duration;

fn lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(String::from).collect()
}

fn is_base32_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[tokio::test]
async fn a_paused_peer_is_one_warning_and_one_notice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("seed.log");
    let seed = Doozerd::start_logged(&["--cal-slots", "3"], &log);
    let others: Vec<Doozerd> = (0..2).map(|_| Doozerd::start(&["-a", &seed.addr])).collect();
    common::voters_are(&seed.addr, 3).await;
    let before = lines(&log).len();
    // Paused (SIGSTOP): connections hang, every heartbeat to it fails. Eight
    // seconds is sixteen heartbeat rounds and well inside the default -timeout.
    others[1].signal("STOP");
    eventually("the pause reported", || async { lines(&log).iter().any(|l| l.contains("peer unreachable")) }).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    others[1].signal("CONT");
    eventually("the return reported", || async { lines(&log).iter().any(|l| l.contains("peer reachable again")) })
        .await;
    let during: Vec<String> = lines(&log)[before..].to_vec();
    assert_eq!(during.iter().filter(|l| l.contains("peer unreachable")).count(), 1, "{during:#?}");
    assert_eq!(during.iter().filter(|l| l.contains("peer reachable again")).count(), 1, "{during:#?}");
    assert!(during.len() <= 4, "quiet while a peer is down: {during:#?}");
    assert!(!during.iter().any(|l| l.contains("ERROR")), "{during:#?}");
    // Every node named in the log is named by its /ctl id, never a Raft number.
    for l in lines(&log) {
        for part in l.split_whitespace().filter_map(|w| w.strip_prefix("node=")) {
            assert!(is_base32_id(part.trim_matches('"')), "a node named {part:?} in {l:?}");
        }
    }
}

#[test]
fn json_log_lines_for_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("json.log");
    let d = Doozerd::start_logged(&["--log-format", "json"], &log);
    common::wait_until("the serving line", || lines(&log).iter().any(|l| l.contains("serving")));
    for l in lines(&log) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let serving = lines(&log).into_iter().find(|l| l.contains("serving")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&serving).unwrap();
    assert_eq!(v["addr"], d.addr.as_str());
    assert!(is_base32_id(v["id"].as_str().unwrap()));
}
