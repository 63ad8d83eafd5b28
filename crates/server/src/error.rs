//! Errors as the clients expect them: OpenAI's `{"error":{"message","type","code"}}`
//! under `/v1`, Ollama's `{"error":"..."}` under `/api`, Anthropic's
//! `{"type":"error","error":{"type","message"}}` under `/v1/messages`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Ollama,
    Anthropic,
}

/// An HTTP error with its status, message and OpenAI type/code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: "invalid_request_error", "authentication_error", "server_error", ...
    pub kind: &'static str,
    /// OpenAI's `code` (None → null).
    pub code: Option<&'static str>,
    pub flavor: Flavor,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
            flavor: Flavor::OpenAi,
        }
    }

    /// 400: the request cannot be served as written.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// 400 with a specific code (e.g. "context_length_exceeded").
    pub fn bad_request_code(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(code),
            message,
        )
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("invalid_api_key"),
            "Incorrect or missing API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
        )
    }

    /// 403: the request's `Host` or `Origin` is not allowed.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("forbidden"),
            message,
        )
    }

    /// 404: no such route.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            format!("no route for {method} {path}"),
        )
    }

    /// 404: the request names another model.
    pub fn unknown_model(asked: &str, served: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model '{asked}' does not exist: this server serves '{served}'"),
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media(found: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            Some("unsupported_media_type"),
            format!("expected 'Content-Type: application/json', got '{found}'"),
        )
    }

    /// 503: every slot and the queue are busy, or the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("server_busy"),
            message,
        )
    }

    /// 500: the model failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        )
    }

    /// An error the HTTP layer produced (405 for a wrong method, 413 for a body too
    /// large, 400/422 from a body extractor): its status and what it said, as JSON.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        let (kind, code) = match status {
            StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", Some("method_not_allowed")),
            StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", Some("payload_too_large")),
            StatusCode::REQUEST_TIMEOUT => ("invalid_request_error", Some("request_timeout")),
            StatusCode::FORBIDDEN => ("permission_error", Some("forbidden")),
            s if s.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        let mut message = message.into();
        if message.trim().is_empty() {
            message = status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string();
        }
        ApiError::new(status, kind, code, message)
    }

    /// The API whose routes `path` is on: Ollama's under `/api/`, Anthropic's under
    /// `/v1/messages`, OpenAI's elsewhere.
    pub fn flavor_of(path: &str) -> Flavor {
        if path.starts_with("/api/") {
            Flavor::Ollama
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Flavor::Anthropic
        } else {
            Flavor::OpenAi
        }
    }

    /// Anthropic's error `type` for this error's status (their documented table; a
    /// 503 — busy or shutting down — is their "overloaded" case).
    pub fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The same error in another API's shape.
    pub fn with_flavor(mut self, flavor: Flavor) -> ApiError {
        self.flavor = flavor;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.flavor {
            Flavor::OpenAi => {
                json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}})
            }
            Flavor::Ollama => json!({"error": self.message}),
            Flavor::Anthropic => json!({"type": "error",
                "error": {"type": self.anthropic_type(), "message": self.message}}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Busy or shutting down: a client may try again (a second is a fair wait for
            // a slot; a restarted server is back about as fast).
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

/// The caller's input → 400; the model's failure → 500 (its cause is logged where the
/// generation ends).
impl From<engine::EngineError> for ApiError {
    fn from(e: engine::EngineError) -> ApiError {
        if e.is_input() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

impl From<engine::scheduler::SubmitError> for ApiError {
    fn from(e: engine::scheduler::SubmitError) -> ApiError {
        match e {
            engine::scheduler::SubmitError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::EngineError;

    #[test]
    fn engine_errors_map_to_400_or_500() {
        let internal = ApiError::from(EngineError::from(model::ModelError::Kernel(
            "blk.0.ffn_up: matmul: shape mismatch".into(),
        )));
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(internal.kind, "server_error");
        assert!(internal.message.contains("shape mismatch"));
        assert_eq!(
            ApiError::from(EngineError::NoTokenizer).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let input = ApiError::from(EngineError::Input("the prompt is empty".into()));
        assert_eq!(input.status, StatusCode::BAD_REQUEST);
        assert_eq!(input.message, "the prompt is empty");
    }

    #[test]
    fn anthropic_shape_and_types_by_status() {
        assert_eq!(ApiError::flavor_of("/v1/messages"), Flavor::Anthropic);
        assert_eq!(
            ApiError::flavor_of("/v1/messages/count_tokens"),
            Flavor::Anthropic
        );
        assert_eq!(
            ApiError::flavor_of("/v1/messagesx"),
            Flavor::OpenAi,
            "only the Messages routes"
        );
        assert_eq!(ApiError::flavor_of("/v1/chat/completions"), Flavor::OpenAi);
        let cases = [
            (ApiError::bad_request("x"), "invalid_request_error"),
            (ApiError::unauthorized(), "authentication_error"),
            (ApiError::forbidden("x"), "permission_error"),
            (ApiError::unknown_model("a", "b"), "not_found_error"),
            (
                ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE, "x"),
                "request_too_large",
            ),
            (ApiError::unavailable("x"), "overloaded_error"),
            (ApiError::internal("x"), "api_error"),
            (
                ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED, ""),
                "invalid_request_error",
            ),
        ];
        for (e, kind) in cases {
            let body = e.with_flavor(Flavor::Anthropic).body();
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}
