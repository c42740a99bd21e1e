use clap::Parser;
use hendu_hash_generator::{Cli, Config, DEFAULT_PORT, SERVICE, install};
use hendu_service::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    let config = Config::from_env()?;
    let mut app = Application::from_env(SERVICE, DEFAULT_PORT).await?;
    install(&mut app, &config);
    app.run().await?;
    Ok(())
}
