//! `doozer-torture`: runs doozerd clusters under faults and checks the history.
//!
//! Prints the seed first; `--seed N` replays the same fault schedule.

use clap::Parser;
use doozer_verify::faults::Kind;
use doozer_verify::run::{run, Scenario};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "doozer-torture", about = "Fault-injection runs against real doozerd clusters, with history checkers")]
struct Args {
    /// The doozerd binary (default: next to this one).
    #[arg(long)]
    doozerd: Option<PathBuf>,
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of faults and load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seed for the fault schedule and the workload (default: random).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// Keys the clients use.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Faults to inject: any of kill, pause, partition, membership, lag (a follower paused under a
    /// write flood, catching up by snapshot), join (a node joining under a write flood); with
    /// --durable also killall (every node killed and restarted) and torn (a node killed, a torn
    /// write left at the end of its newest log segment, restarted); "none" for none.
    #[arg(long, default_value = "kill,pause,partition,membership,lag,join")]
    faults: String,
    /// The nodes' -timeout in seconds (not the default 60, so that pauses and
    /// partitions outlast it within a run: removals and rejoins happen).
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// No writer of values near the 1 MiB limit beside the clients.
    #[arg(long)]
    no_big_values: bool,
    /// Election contenders making fenced writes (mutual exclusion is checked), and as many lease keepers (no lease may end early).
    #[arg(long, default_value_t = 2)]
    contenders: usize,
    /// Every node keeps its state in a data dir (--data-dir): a killed node restarts as the same member.
    #[arg(long)]
    durable: bool,
    /// Every node serves peers and clients over mutual TLS (-tlscert, --client-ca, --peer-cert...), with certificates made for the run.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let doozerd = args.doozerd.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("doozerd")
    });
    let kinds: Vec<Kind> =
        args.faults.split(',').filter(|f| *f != "none" && !f.is_empty()).filter_map(Kind::parse).collect();
    if !args.durable && kinds.iter().any(|k| matches!(k, Kind::KillAll | Kind::Torn)) {
        eprintln!("doozer-torture: the killall and torn faults need --durable (memory-only nodes lose everything)");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mode = format!("{}{}", if args.durable { " durable" } else { "" }, if args.tls { " tls" } else { "" });
    println!("seed={seed} nodes={} duration={}s faults={}{mode}", args.nodes, args.duration, args.faults);
    let scenario = Scenario {
        name: "cli".into(),
        nodes: args.nodes,
        duration: Duration::from_secs(args.duration),
        seed,
        clients: args.clients,
        watchers: args.watchers,
        keys: args.keys,
        kinds,
        member_timeout: args.timeout,
        big_values: !args.no_big_values,
        contenders: args.contenders,
        durable: args.durable,
        tls: args.tls,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doozer-torture: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&doozerd, &scenario)) {
        Err(e) => {
            eprintln!("doozer-torture: the run could not complete: {e} (seed {seed})");
            ExitCode::from(2)
        }
        Ok(outcome) => {
            for f in &outcome.faults {
                println!("fault {f}");
            }
            let r = &outcome.report;
            println!("{}", outcome.summary());
            for a in &r.anomalies {
                println!("ANOMALY {a}");
            }
            if let Some(dir) = &outcome.dir {
                println!("node logs kept in {}", dir.display());
            }
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
