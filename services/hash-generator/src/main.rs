use clap::Parser;
use hendu_hash_generator::{Cli, Config, DEFAULT_PORT, SERVICE, install};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(command) = Cli::parse().command {
        command.exit(DEFAULT_PORT);
    }
    hendu_service::app::main_with(SERVICE, DEFAULT_PORT, Config::from_env, install).await
}
