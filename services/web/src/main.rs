use clap::Parser;
use hendu_web::{Cli, Config, DEFAULT_PORT, SERVICE, install};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    hendu_service::app::main_with(SERVICE, DEFAULT_PORT, Config::from_env, install).await
}
