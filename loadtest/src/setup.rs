//! What a run needs in place before it starts, made through the services'
//! own APIs with an administrator's token: devices registered (with fresh
//! IMEIs, so runs never collide) and the programme's tracks in the catalogue.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt};
use hendu_sensor::client::Credentials;
use hendu_storage::model::Imei;
use serde_json::{Value, json};

/// A registered device.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: i64,
    pub credentials: Credentials,
}

/// `n` fresh IMEIs: a random 8-digit stem, then the device's number.
pub fn imeis(n: usize, stem: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let body = format!("35{:06}{:06}", stem % 1_000_000, i);
            let check = Imei::check_digit(&body);
            format!("{body}{check}")
        })
        .collect()
}

/// Registers `imeis` with the communication service at `api`, 8 at a time.
///
/// # Errors
/// The first registration refused, with the service's words.
pub async fn register_devices(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    imeis: &[String],
) -> Result<Vec<Registered>> {
    futures_util::stream::iter(imeis.iter().cloned())
        .map(|imei| async move {
            let r = http
                .post(format!("{api}/v1/devices"))
                .bearer_auth(token)
                .json(&json!({ "imei": imei, "name": "Load generator", "location": "Load test" }))
                .send()
                .await
                .with_context(|| format!("cannot reach {api} to register devices"))?;
            if !r.status().is_success() {
                bail!(
                    "registering {imei}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            let body: Value = r.json().await?;
            Ok(Registered {
                id: body["id"]
                    .as_i64()
                    .context("no id in a registration's answer")?,
                credentials: Credentials {
                    imei,
                    secret: body["secret"]
                        .as_str()
                        .context("no secret in a registration's answer")?
                        .to_owned(),
                },
            })
        })
        .buffered(8)
        .try_collect()
        .await
}

/// Uploads `tracks` (name, WAV bytes) to the hash-generator at `api`, one
/// at a time; a track already there is fine. Returns each one's id (when
/// the answer gives it).
///
/// # Errors
/// An upload refused, with the service's words.
pub async fn upload_tracks(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    tracks: Vec<(String, Vec<u8>)>,
) -> Result<Vec<Option<i64>>> {
    let mut ids = Vec::new();
    for (name, wav) in tracks {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(wav).file_name(format!("{name}.wav")),
            )
            .text("title", name.clone());
        let r = http
            .post(format!("{api}/v1/musics"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .with_context(|| format!("cannot reach {api} to upload the catalogue"))?;
        let status = r.status();
        if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
            bail!(
                "uploading {name}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        let body: Value = r.json().await.unwrap_or_default();
        ids.push(body["id"].as_i64());
    }
    // The recognisers load a new track when they hear of it: a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imeis_are_valid_and_distinct() {
        let a = imeis(1000, 123_456_789);
        assert!(a.iter().all(|i| Imei::parse(i).is_ok()));
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 1000);
    }
}
