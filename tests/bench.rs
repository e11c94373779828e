//! Smoke test of doozer-bench: every workload runs for about a second
//! against a real doozerd and reports sane numbers. (Performance itself is
//! measured by running the bench, not asserted here.)

mod common;

use common::Doozerd;

/// The number after `"key":` in a JSON line.
fn number(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(&format!("\"{key}\":"))? + key.len() + 3..];
    rest.split([',', '}']).next()?.parse().ok()
}

#[test]
fn every_workload_runs_and_reports() {
    let d = Doozerd::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozer-bench"))
        .args(["-a", &d.addr, "--duration", "1", "--warmup", "0.2", "--clients", "4", "--watchers", "4"])
        .args(["--keys", "50", "--mem-keys", "500"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    let names: Vec<&str> = json.iter().filter_map(|l| l.split('"').nth(3)).collect();
    assert_eq!(names, ["put-seq", "put-conc", "get-conc", "watch-fanout", "mem"], "{stdout}");
    for line in &json {
        assert!(number(line, "ops").is_some_and(|n| n > 0.0), "{line}");
        assert!(number(line, "ops_per_sec").is_some_and(|n| n > 0.0), "{line}");
    }
    for line in &json[..3] {
        let (p50, p99) = (number(line, "latency_p50_us").unwrap(), number(line, "latency_p99_us").unwrap());
        assert!(p50 >= 1.0 && p99 >= p50, "{line}");
    }
    assert_eq!(number(json[3], "missing_events"), Some(0.0), "{}", json[3]);
    assert!(number(json[3], "from_send_p99_us").is_some_and(|n| n >= 1.0), "{}", json[3]);
    assert!(json[4].contains("rss_bytes_per_key"), "{}", json[4]);
    // It said where it writes, and left nothing behind.
    assert!(String::from_utf8_lossy(&out.stderr).contains("writing test data under /bench/"));
    let left = common::doozer(&d.uri(), &["find", "/bench"], b"");
    assert_eq!(left.out(), "", "doozer-bench cleans up after itself");
}
