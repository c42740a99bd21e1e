//! `hendu user` and `hendu token`: accounts and API tokens, directly on the
//! store (the embedded one with `--store DIR`, or the servers), for the
//! operator of an installation. People and programs without access to the
//! store use the accounts API (`/v1/users`, `/v1/tokens`).

use anyhow::{Context, Result, bail};
use hendu_storage::credentials::{AuthKey, issue_token};
use hendu_storage::model::{NewToken, NewUser, Role, Secret, User};

use crate::storage::{Opened, StoreArgs};

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from HENDU_PASSWORD, or from the
    /// first line of standard input (never from the command line, where
    /// other users of the machine could see it).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// E-mail address: the user's name for signing in.
        email: String,
        /// musician (owns tracks), operator (reads the plays of its sources) or admin.
        #[arg(long, value_parser = ["musician", "operator", "admin"])]
        role: String,
        /// Name shown to people (default: the e-mail address).
        #[arg(long)]
        name: Option<String>,
    },
    /// List users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a user: their tokens and password stop working (their
    /// tracks and plays stay). --enable undoes it.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        email: String,
        #[arg(long)]
        enable: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make an API token for a user; it is printed once, on standard output.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The user's e-mail address.
        email: String,
        /// What the token is for ("laptop", "station uploader").
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (all, or one user's), never their secrets.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this user's.
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
    },
    /// Revoke a token by its id (from `hendu token list`).
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
}

fn find(opened: &Opened, email: &str) -> Result<User> {
    opened
        .block_on(opened.storage.relational.user_by_email(email))?
        .with_context(|| format!("no user has e-mail {email}"))
}

fn password() -> Result<Secret> {
    if let Ok(p) = std::env::var("HENDU_PASSWORD")
        && !p.is_empty()
    {
        return Ok(Secret::new(p));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        bail!("give the password in HENDU_PASSWORD or on standard input");
    }
    Ok(Secret::new(line))
}

fn time(t: Option<time::OffsetDateTime>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        },
    )
}

/// # Errors
/// A store that cannot be opened, a bad value, an unknown user.
pub fn run_user(args: &UserArgs) -> Result<i32> {
    match &args.command {
        UserCommand::Create {
            store,
            email,
            role,
            name,
        } => {
            let role = Role::parse_name(role)?;
            let new = NewUser::new(email, name.as_deref().unwrap_or(email), role, password()?)?;
            let opened = store.open(true)?;
            let user = opened.block_on(opened.storage.relational.add_user(&new))?;
            println!(
                "user {} created: {} ({})",
                user.id,
                user.email,
                role.as_str()
            );
        }
        UserCommand::List { store } => {
            let opened = store.open(false)?;
            println!(
                "{:>6}  {:<9} {:<8} {:<32} name",
                "id", "role", "state", "e-mail"
            );
            let mut after = 0;
            loop {
                let page = opened.block_on(opened.storage.relational.users(after, 500))?;
                for u in &page {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!(
                        "{:>6}  {:<9} {:<8} {:<32} {}",
                        u.id,
                        u.role.as_str(),
                        state,
                        u.email,
                        u.display_name
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = last.id,
                    _ => break,
                }
            }
        }
        UserCommand::Disable {
            store,
            email,
            enable,
        } => {
            let opened = store.open(false)?;
            let user = find(&opened, email)?;
            opened.block_on(
                opened
                    .storage
                    .relational
                    .set_user_disabled(user.id, !enable),
            )?;
            let now = if *enable { "enabled" } else { "disabled" };
            println!("user {} {now}", user.email);
        }
    }
    Ok(0)
}

/// # Errors
/// A store that cannot be opened, an unknown user or token.
pub fn run_token(args: &TokenArgs) -> Result<i32> {
    match &args.command {
        TokenCommand::Create { store, email, name } => {
            let opened = store.open(false)?;
            let user = find(&opened, email)?;
            if user.disabled {
                bail!("user {email} is disabled");
            }
            let key = opened.block_on(AuthKey::load(&opened.storage))?;
            let issued = issue_token(&key);
            let new = NewToken::new(&issued.public_id, &issued.digest, &user, name)?;
            let token = opened.block_on(opened.storage.relational.add_token(&new))?;
            eprintln!(
                "token {} for {} ({}); it is shown only now:",
                token.id,
                user.email,
                user.role.as_str()
            );
            println!("{}", issued.token.expose());
        }
        TokenCommand::List { store, user } => {
            let opened = store.open(false)?;
            let whose = match user {
                Some(email) => Some(find(&opened, email)?.id),
                None => None,
            };
            let tokens = opened.block_on(opened.storage.relational.tokens(whose))?;
            println!(
                "{:>6}  {:>6}  {:<9} {:<25} {:<25} {:<25} name",
                "id", "user", "scope", "created", "last used", "revoked"
            );
            for t in tokens {
                println!(
                    "{:>6}  {:>6}  {:<9} {:<25} {:<25} {:<25} {}",
                    t.id,
                    t.user_id,
                    t.scope.as_str(),
                    time(Some(t.created_at)),
                    time(t.last_used_at),
                    time(t.revoked_at),
                    t.name
                );
            }
        }
        TokenCommand::Revoke { store, id } => {
            let opened = store.open(false)?;
            if !opened.block_on(opened.storage.relational.revoke_token(*id))? {
                bail!("no token {id}, or it was revoked already");
            }
            println!("token {id} revoked");
        }
    }
    Ok(0)
}
