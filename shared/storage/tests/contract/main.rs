//! The storage contract: the same assertions against the servers (MariaDB,
//! a MongoDB wire-protocol server, Redis) and against the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod catalogue;
mod harness;
mod queue;
mod records;
mod web;

/// Runs each listed test body (an `async fn(Kind)`) once per backend.
macro_rules! contract {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::harness::Kind::Embedded).await;
                }
            )*
        }
        mod servers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::harness::Kind::Servers).await;
                }
            )*
        }
    };
}
pub(crate) use contract;
