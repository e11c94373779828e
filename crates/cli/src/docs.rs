//! Shell completions and the manual page, generated (clap_complete,
//! clap_mangen) from the same table of commands and flags the parser and
//! `doozer help` use, so they cannot drift apart.

use crate::commands::COMMANDS;
use crate::flags::Flags;
use crate::Failure;
use clap::{Arg, ArgAction, Command};

/// The global flags, as documented in the usage text.
fn global_flags(cmd: Command) -> Command {
    let value = |name: &'static str, help: &'static str| Arg::new(name).long(name).help(help).global(true);
    cmd.arg(value("a", "the cluster: doozer:?ca=HOST:PORT&ca=...&sk=SECRET, or HOST:PORT").short('a'))
        .arg(value("b", "the DzNS uri, to find a cluster named with cn=").short('b'))
        .arg(value("r", "request rev (default -1: now)").short('r'))
        .arg(value("t", "timeout for the whole command, e.g. 2s, 1m30s").short('t'))
        .arg(value("w", "output format: simple (the default) or json").short('w'))
        .arg(Arg::new("json").long("json").help("one JSON object per line").action(ArgAction::SetTrue).global(true))
        .arg(value("cacert", "TLS: the CA certificate that signed the server's (PEM)"))
        .arg(value("cert", "TLS: a client certificate (PEM)"))
        .arg(value("key", "TLS: the client certificate's key (PEM)"))
        .arg(Arg::new("version").short('v').long("version").help("print version string").action(ArgAction::Version))
}

/// The CLI as clap sees it, for generating documents only (parsing is Go-style, see `flags`).
pub fn definition() -> Command {
    let mut cli = Command::new("doozer")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The Doozer command-line client")
        .long_about(
            "The Doozer command-line client: read, write and watch the files of a Doozer cluster.\n\n\
             The exit status is 0 on success, 1 for a rev mismatch, 2 for other errors, and 127 for usage errors.\n\n\
             Environment: DOOZER_URI (the cluster, overridden by -a), DOOZER_BOOT_URI (the DzNS, overridden by -b), \
             DOOZER_CACERT, DOOZER_CERT, DOOZER_KEY (TLS files).",
        )
        .disable_help_subcommand(true)
        .disable_version_flag(true);
    cli = global_flags(cli);
    for c in COMMANDS {
        let mut sub = Command::new(c.name).about(c.short).long_about(c.help.trim_end());
        for (i, a) in c.args.iter().copied().enumerate() {
            let id: &'static str = a.trim_matches(|ch| ch == '<' || ch == '>');
            let optional = c.optional_last && i + 1 == c.args.len();
            let mut arg = Arg::new(id).required(!optional).value_name(a);
            if c.name == "help" {
                arg = arg.value_parser(COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>());
            }
            if c.name == "completion" {
                arg = arg.value_parser(["bash", "zsh", "fish", "elvish", "powershell"]);
            }
            sub = sub.arg(arg);
        }
        cli = cli.subcommand(sub);
    }
    cli
}

pub async fn completion(_flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let shell: clap_complete::Shell = args[0]
        .parse()
        .map_err(|_| Failure::Message(format!("unknown shell {:?}: bash, zsh, fish, elvish or powershell", args[0])))?;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut definition(), "doozer", &mut out);
    crate::output::write_out(&out)
}

pub async fn man(_flags: Flags, _args: Vec<String>) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(definition())
        .render(&mut out)
        .map_err(|e| Failure::Message(format!("cannot render the manual page: {e}")))?;
    crate::output::write_out(&out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_definition_is_consistent() {
        super::definition().debug_assert();
    }
}
