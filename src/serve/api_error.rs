//! Errors of the HTTP API in OpenAI's shape: a status and
//! `{"error": {"message", "type", "param", "code"}}`.

use serde_json::{json, Value};

/// One API error.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong, naming the field or limit.
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// OpenAI's `code` (`context_length_exceeded`, `invalid_api_key`, ...), if any.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400 for a body that is not the JSON object expected.
    pub fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError {
            param: None,
            ..ApiError::invalid("", message)
        }
    }

    /// 400 `context_length_exceeded`.
    pub fn context_length(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(param, message)
        }
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: 401,
            message: "Incorrect or missing API key: send `Authorization: Bearer KEY` with the \
                      key the server was started with"
                .into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(asked: &str, served: &str) -> ApiError {
        ApiError {
            status: 404,
            message: format!("The model `{asked}` does not exist; this server serves `{served}`"),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 404 for a path the server does not have.
    pub fn no_route(path: &str) -> ApiError {
        ApiError {
            status: 404,
            message: format!("Unknown path {path}"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: 413,
            message: format!("The request body is over the limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 408 for a body that does not arrive in time.
    pub fn body_timeout(secs: u64) -> ApiError {
        ApiError {
            status: 408,
            message: format!("The request body did not arrive within {secs} s"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
        }
    }

    /// 429 when the queue is full.
    pub fn queue_full(limit: usize) -> ApiError {
        ApiError {
            status: 429,
            message: format!(
                "The server is busy: {limit} requests are already waiting (--max-queue); retry later"
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    /// 503 while the model loads or the server stops.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("unavailable"),
        }
    }

    /// 500 for a failure inside the model (non-finite logits).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}
