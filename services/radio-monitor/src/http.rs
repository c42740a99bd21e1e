//! HTTP as every station uses it: the shared client, GETs whose failures
//! say what the listener does next (a refusal, a failure, a form this
//! build cannot listen to), and short bodies read whole within bounds.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use url::Url;

/// Most redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// Why a station could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The server answered 4xx: retried slowly.
    Refused(u16),
    /// Connecting failed, or the server answered 5xx: retried with backoff.
    Failed(String),
    /// The station is in a form this build cannot listen to.
    Unsupported(String),
}

/// A station's bytes as they arrive; an error ends it with the reason.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// GETs `url` (ICY metadata asked for); 4xx and 5xx answers are errors.
/// The answer's head must arrive within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<reqwest::Response, OpenError> {
    let response = tokio::time::timeout(
        timeout,
        client.get(url.clone()).header("Icy-MetaData", "1").send(),
    )
    .await
    .map_err(|_| OpenError::Failed(format!("no answer within {} s", timeout.as_secs())))?
    .map_err(|e| OpenError::Failed(describe(&e)))?;
    let status = response.status();
    if status.is_client_error() {
        return Err(OpenError::Refused(status.as_u16()));
    }
    if !status.is_success() {
        return Err(OpenError::Failed(format!("the server answered {status}")));
    }
    Ok(response)
}

/// The HTTP client every station shares.
///
/// # Errors
/// If the TLS backend cannot start.
pub fn client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("hendu-radio-monitor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
}

/// A whole (short) body: a playlist, an HLS segment; at most `limit`
/// bytes, within `timeout`.
pub async fn read_limited(
    response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, OpenError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = tokio::time::timeout(timeout, async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OpenError::Failed(describe(&e)))?;
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(OpenError::Failed(format!(
                    "the body is larger than {limit} bytes"
                )));
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => Ok(body),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(OpenError::Failed(format!(
            "the body did not arrive within {} s",
            timeout.as_secs()
        ))),
    }
}

/// A reqwest error with its causes (the top level alone says little).
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
