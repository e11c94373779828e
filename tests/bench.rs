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

/// Runs doozer-bench with `args`; its stdout and JSON lines, after checking it succeeded.
fn bench(args: &[&str]) -> (String, Vec<String>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozer-bench")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout.lines().filter(|l| l.starts_with('{')).map(str::to_string).collect();
    (stdout, json)
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

#[test]
fn watch_fanout_runs_once_per_watcher_count_and_says_whose_cpu_it_took() {
    let d = Doozerd::start(&[]);
    let fanout = ["--workload", "watch-fanout", "--watchers", "2,5", "--stream", "--duration", "1", "--warmup", "0.2"];
    let (stdout, json) = bench(&[&["-a", &d.addr][..], &fanout].concat());
    assert_eq!(json.len(), 2, "{stdout}");
    for (line, watchers) in json.iter().zip([2.0, 5.0]) {
        assert_eq!(number(line, "watchers"), Some(watchers), "{line}");
        assert!(line.contains("\"watch\":\"stream\""), "{line}");
        assert_eq!(number(line, "missing_events"), Some(0.0), "{line}");
        assert!(number(line, "bench_cpu_pct").is_some(), "{line}");
        assert!(number(line, &format!("server_cpu_pct[{}]", d.addr)).is_some(), "{line}");
    }
}

#[test]
fn scale_reports_each_cost_at_each_size() {
    let (stdout, json) = bench(&["--workload", "scale", "--scale-keys", "300,600", "--scale-settle", "0"]);
    assert_eq!(json.len(), 2, "{stdout}");
    for (line, keys) in json.iter().zip([300.0, 600.0]) {
        assert_eq!(number(line, "ops"), Some(keys), "{line}");
        // The whole tree: the keys and /ctl's files.
        assert!(number(line, "walked").is_some_and(|n| n > keys), "{line}");
        assert!(number(line, "past_get_p99_us").is_some_and(|n| n >= 1.0), "{line}");
        let costs = ["load_s", "walk_s", "join_s", "backup_s", "restore_s"];
        let memory = [
            "rss_bytes_per_key",
            "joined_rss_bytes_per_key",
            "restored_rss_bytes_per_key",
            "restored_settled_rss_bytes_per_key",
        ];
        for key in costs.iter().chain(&memory) {
            assert!(number(line, key).is_some(), "{key} in {line}");
        }
    }
}
