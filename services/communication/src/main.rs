use clap::Parser;
use hendu_communication::{Cli, Config, DEFAULT_PORT, SERVICE, bootstrap_admin, install};
use hendu_service::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(command) = Cli::parse().command {
        command.exit(DEFAULT_PORT);
    }
    let config = Config::from_env()?;
    let mut app = Application::from_env(SERVICE, DEFAULT_PORT).await?;
    bootstrap_admin(&app.storage, &config).await?;
    install(&mut app, &config)?;
    app.run().await?;
    Ok(())
}
