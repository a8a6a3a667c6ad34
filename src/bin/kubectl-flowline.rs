//! `kubectl flowline …`: kubectl runs this binary when it is on PATH. The same commands as
//! `flowline run|logs|graph|get|stop|resume`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kubectl flowline",
    bin_name = "kubectl flowline",
    version,
    about = "Run Flowline Flows, follow their Runs, read their logs and draw their graphs"
)]
struct Cli {
    #[command(subcommand)]
    command: flowline::cli::UserCommand,
}

fn main() -> ExitCode {
    flowline::cli::execute(Cli::parse().command)
}
