use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use poolpilot::cli::{self, Cli};
use poolpilot::{config, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(config::EXIT_CONFIG as u8);
        }
    };
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolpilot: {e:#}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
