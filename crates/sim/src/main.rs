//! `doozer-sim`: runs seeded simulations of whole clusters; prints failing seeds.
//!
//! `doozer-sim --seed N [--trace]` replays one run (with its trace lines);
//! `doozer-sim --seeds N [--from S]` or `--minutes M` sweeps, one seed after
//! another, each in a process of its own (so each replays exactly with
//! `--seed`, and a panic fails one seed, not the sweep), and ends by saying
//! how far it got, so a sweep can go on from there.

use clap::Parser;
use doozer_sim::{run, Plan, Trace};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Deterministic simulation of doozerd clusters under seeded faults")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the run's trace (with --seed).
    #[arg(long)]
    trace: bool,
    /// Run the seed twice in this process and show where the traces part
    /// (with --seed): a check that no state leaks from one run to the next.
    #[arg(long)]
    twice: bool,
    /// Sweep this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// Sweep for this many minutes of wall time.
    #[arg(long)]
    minutes: Option<f64>,
    /// The first seed of a sweep.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Stop a sweep at its first failing seed.
    #[arg(long)]
    stop: bool,
}

/// Runs one seed in a process of its own, as `--seed` replays it: tokio
/// numbers its tasks process-wide, and the numbers decide the order in
/// which a crashed host's tasks are dropped (and so the order of what their
/// sockets send as they close), so a second run in one process can differ
/// from the first. Returns whether it passed, its virtual time, and its
/// violations (or why it could not run).
fn run_alone(seed: u64) -> (bool, Duration, String) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return (false, Duration::ZERO, format!("cannot find this program to run it again: {e}")),
    };
    let out = match std::process::Command::new(exe).args(["--seed", &seed.to_string()]).output() {
        Ok(o) => o,
        Err(e) => return (false, Duration::ZERO, format!("cannot start a run: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let elapsed = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("seed {seed} trace ")))
        .and_then(|l| l.split(" virtual ").nth(1))
        .and_then(|v| v.split('s').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let violations: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("VIOLATION ")).collect();
    let summary = if !violations.is_empty() {
        violations.join("; ")
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines().find(|l| l.contains("panicked")).unwrap_or("exited without a result").to_string()
    };
    (out.status.success(), elapsed, summary)
}

/// Log lines carry the simulation's virtual time (blank outside a host).
struct Virtual;

impl tracing_subscriber::fmt::time::FormatTime for Virtual {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>9.3}s", t.as_secs_f64()),
            None => write!(w, "{:>10}", ""),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // RUST_LOG=openraft=debug,doozer_server=debug shows what the nodes say
    // (in the order they said it: the run is one thread).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_timer(Virtual)
            .init();
    }
    if let (Some(seed), true) = (args.seed, args.twice) {
        let plan = Plan::new(seed);
        let (mut a, mut b) = (Trace::keeping_lines(), Trace::keeping_lines());
        let (x, y) = (run(&plan, &mut a), run(&plan, &mut b));
        let (la, lb) = (a.lines.unwrap_or_default(), b.lines.unwrap_or_default());
        match la.iter().zip(&lb).position(|(p, q)| p != q) {
            None if x.trace == y.trace => println!("seed {seed}: the same trace twice ({:016x})", x.trace),
            None => println!("seed {seed}: traces of different lengths ({} and {} lines)", la.len(), lb.len()),
            Some(i) => println!("seed {seed}: traces part at line {i}:\n  {}\n  {}", la[i], lb[i]),
        }
        return if x.trace == y.trace { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE };
    }
    if let Some(seed) = args.seed {
        let plan = Plan::new(seed);
        println!("{plan:?}");
        let mut trace = if args.trace { Trace::keeping_lines() } else { Trace::default() };
        let out = run(&plan, &mut trace);
        for l in trace.lines.iter().flatten() {
            println!("{l}");
        }
        println!(
            "seed {} trace {:016x} virtual {:?} revisions {} operations {} fenced {} rejoins {}",
            out.seed, out.trace, out.elapsed, out.revisions, out.operations, out.fenced, out.rejoins
        );
        for v in &out.violations {
            println!("VIOLATION {v}");
        }
        return if out.ok() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE };
    }
    let started = Instant::now();
    let budget = args.minutes.map(|m| Duration::from_secs_f64(m * 60.0));
    let count = args.seeds.unwrap_or(if budget.is_some() { u64::MAX } else { 100 });
    let (mut failed, mut done, mut virtual_time) = (Vec::new(), 0u64, Duration::ZERO);
    for seed in args.from..args.from.saturating_add(count) {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let (ok, elapsed, summary) = run_alone(seed);
        done += 1;
        virtual_time += elapsed;
        if !ok {
            println!("FAILED seed {seed}: {summary}");
            failed.push(seed);
            if args.stop {
                break;
            }
        }
    }
    let wall = started.elapsed();
    println!(
        "{done} schedules (seeds {}..={}), {:.0} s virtual, {:.0} s wall, {:.2} schedules/s; failing seeds: {failed:?}",
        args.from,
        args.from + done.saturating_sub(1),
        virtual_time.as_secs_f64(),
        wall.as_secs_f64(),
        done as f64 / wall.as_secs_f64()
    );
    println!("to go on: doozer-sim --from {} ...", args.from + done);
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
