use clap::Parser;

fn main() {
    let cli = hendu::Cli::parse();
    match hendu::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
