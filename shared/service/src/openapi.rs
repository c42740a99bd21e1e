//! The API's OpenAPI document, generated from the handlers themselves
//! (`utoipa` annotations next to each route). Each service adds its part
//! with [`crate::Application::document`]; the application serves what it
//! has at `GET /v1/openapi.json` (`hendu serve`: every service's routes in
//! one document).

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa::{PartialSchema, ToSchema};

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";
/// The security scheme of every token-protected route: `Authorization:
/// Bearer hnd_...` (see `hendu token create`).
pub const TOKEN: &str = "token";
/// HTTP Basic with a person's e-mail and password (`POST /v1/tokens` only).
pub const PASSWORD: &str = "password";

/// The one error shape of every route (see [`crate::error`]).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_input`, `not_found`, `forbidden`, ...
    pub code: String,
    /// For people.
    pub message: String,
}

/// The document every service's part is merged into: its title, version,
/// the token scheme and the error shape.
pub fn base(service: &str) -> OpenApi {
    let components = ComponentsBuilder::new()
        .security_scheme(
            TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`hnd_...`) from `hendu token create` or `POST /v1/tokens`",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            PASSWORD,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A person's e-mail and password: only to make their own first token",
                    ))
                    .build(),
            ),
        )
        .schema(ErrorBody::name(), ErrorBody::schema())
        .schema(ErrorDetail::name(), ErrorDetail::schema())
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(format!("HENDU {service}"))
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Music recognition and royalty reporting: the catalogue, stations, \
                     devices, plays and usage reports. Errors are \
                     `{\"error\": {\"code\", \"message\"}}`.",
                ))
                .build(),
        )
        .components(Some(components))
        .build()
}

/// `GET /v1/openapi.json`: `doc`, serialised once.
pub fn route(doc: &OpenApi) -> axum::Router {
    let body = doc.to_json().unwrap_or_else(|_| "{}".to_owned());
    axum::Router::new().route(
        PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
        }),
    )
}
