//! A request body must arrive within `timeouts.body_read_ms` of its head, or the request
//! is answered 408 and the connection closed.
//!
//! Without this, an authenticated request whose body never came held its connection and
//! its handler for as long as the client kept the socket open. The limit is on the whole
//! body, not between chunks, so a body dripped a byte at a time is refused as well.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::Body as _;
use tokio::sync::oneshot;

use super::log_every::LogEvery;
use crate::metrics as m;

static LOG: LogEvery = LogEvery::new(Duration::from_secs(10));

/// The middleware: `limit` is the body's deadline, counted from when its head was read.
pub async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (arrived, mut arrival) = oneshot::channel();
    let req = req.map(|inner| {
        Body::new(Arriving {
            inner,
            arrived: Some(arrived),
        })
    });
    let response = next.run(req);
    tokio::pin!(response);
    tokio::select! {
        biased;
        r = &mut response => return r,
        // Arrived, or dropped unread by a handler that did not want it: either way
        // nothing waits for the client any more.
        _ = &mut arrival => {}
        () = tokio::time::sleep(limit) => {
            metrics::counter!(m::HTTP_TIMEOUTS, "listener" => "public", "reason" => m::REASON_BODY_READ).increment(1);
            if let Some(skipped) = LOG.ready() {
                tracing::info!(skipped, "request refused: body not received in time");
            }
            let mut resp = (
                StatusCode::REQUEST_TIMEOUT,
                Json(serde_json::json!({ "error": "the request body did not arrive in time" })),
            )
                .into_response();
            // The rest of the body may still come: this connection cannot carry another
            // request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    }
    response.await
}

/// A request body that says when it has been read to its end (or dropped).
struct Arriving {
    inner: Body,
    arrived: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Arriving {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            if let Some(tx) = self.arrived.take() {
                let _ = tx.send(());
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
