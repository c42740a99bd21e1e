use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli = hendu_hash_generator::Cli::parse();
    let settings = hendu_service::Settings::from_env(hendu_hash_generator::SERVICE, 8081)?;
    hendu_service::telemetry::init(&settings.log);
    let app = hendu_hash_generator::Application::build(&settings).await?;
    tracing::info!(addr = %app.local_addr(), storage = %app.storage_description(), "listening");
    app.run_until_stopped(hendu_service::shutdown::signal())
        .await?;
    Ok(())
}
