//! Server-Sent Events and long polling, for clients that cannot use WebSockets (proxies
//! that block them): the same session serves them, through a bridge.
//!
//! The first request of a negotiated connection (the event stream, or the first poll)
//! binds it to the node it reaches: that node starts the connection's session on one
//! end of a loopback socket pair, as if a WebSocket had been upgraded, and keeps the
//! other end as the bridge: what the client POSTs goes in as WebSocket frames, and what
//! the session writes comes out as events (`data:` lines) or poll answers. So every rule
//! of a session (handshake, hub methods, limits, keep-alive, client timeout) holds for
//! these transports unchanged.
//!
//! No sticky sessions: a POST or a poll that reaches another node is carried to the
//! bridge's node over its control channel ([`crate::node::Node::transport_call`]). Every
//! later request proves, with the connection token it carries, that it comes from the
//! connection's principal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::admission::{admit, cors, param, refuse, QueryResult};
use super::gate::credential;
use super::AppState;
use crate::auth::TokenBinding;
use crate::ids::ConnectionId;
use crate::node::{BridgeCall, Node, POLL_WAIT};
use crate::ws::{Socket, Upgraded};

/// Requests waiting for one bridge.
const BRIDGE_QUEUE: usize = 16;

/// `GET {hub}?id=`: the event stream (`Accept: text/event-stream`), or a poll.
pub(super) async fn get(
    state: AppState,
    hub: usize,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
) -> Response {
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let id = match known(&state, hub, &query, &headers).await {
        Ok(Some(id)) if sse => {
            return cors(
                (
                    StatusCode::CONFLICT,
                    axum::Json(serde_json::json!({"error": format!("connection {id} already has a transport")})),
                )
                    .into_response(),
                &headers,
            );
        }
        Ok(Some(id)) => id,
        Ok(None) => {
            return cors(
                bind(&state, hub, &query, &headers, peer, sse).await,
                &headers,
            )
        }
        Err(refusal) => return refusal,
    };
    let answer = match state.node.transport_call(hub, &id, None).await {
        Ok(Some(data)) => (StatusCode::OK, data).into_response(),
        Ok(None) | Err(_) => StatusCode::NO_CONTENT.into_response(),
    };
    cors(answer, &headers)
}

/// `POST {hub}?id=`: what the client sends, for its session.
pub(super) async fn post(
    State(state): State<AppState>,
    hub: usize,
    query: QueryResult,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let id = match known(&state, hub, &query, &headers).await {
        Ok(Some(id)) => id,
        Ok(None) => return not_found(&state, hub),
        Err(refusal) => return refusal,
    };
    let answer = match state
        .node
        .transport_call(hub, &id, Some(body.to_vec()))
        .await
    {
        Ok(Some(_)) => StatusCode::OK.into_response(),
        Ok(None) | Err(_) => not_found(&state, hub),
    };
    cors(answer, &headers)
}

/// `DELETE {hub}?id=`: the client ends a long-polling connection.
pub(super) async fn delete(
    State(state): State<AppState>,
    hub: usize,
    query: QueryResult,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    match known(&state, hub, &query, &headers).await {
        Ok(Some(id)) => {
            let _ = state.node.close_connection(hub, &id).await;
            cors(StatusCode::ACCEPTED.into_response(), &headers)
        }
        Ok(None) => not_found(&state, hub),
        Err(refusal) => refusal,
    }
}

fn not_found(state: &AppState, hub: usize) -> Response {
    refuse(
        state,
        hub,
        "connection_token",
        StatusCode::NOT_FOUND,
        "No Connection with that ID",
    )
}

/// The connection `?id=` names, when a node already holds it for this principal;
/// `Ok(None)` when none does (not bound yet).
async fn known(
    state: &AppState,
    hub: usize,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Option<ConnectionId>, Response> {
    let Some(token) = param(query, "id").filter(|t| !t.is_empty()) else {
        return Err(not_found(state, hub));
    };
    let hub_def = &state.node.hubs()[hub];
    let identity = state
        .gate
        .authenticate_client(hub_def, credential(query, headers).as_deref())
        .await
        .map_err(|_| not_found(state, hub))?;
    let id = state
        .gate
        .tokens
        .verify_bound(token, TokenBinding::new(hub_def.name(), &identity))
        .map_err(|_| not_found(state, hub))?;
    let held =
        state.node.has_bridge(&id) || state.node.has_connection(hub, &id).await.unwrap_or(false);
    Ok(held.then_some(id))
}

/// Binds a new connection here: its session on one end of a socket pair, the bridge on
/// the other. The event stream's response, or the first poll's (empty) answer.
async fn bind(
    state: &AppState,
    hub: usize,
    query: &[(String, String)],
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    sse: bool,
) -> Response {
    let start = match admit(state, hub, query, headers, peer, false).await {
        Ok(start) => start,
        Err(refusal) => return refusal,
    };
    let (server, client) = match socket_pair().await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "no loopback socket pair for an HTTP transport");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let id = start.caller.connection_id.clone();
    // Claimed cluster-wide now, before its handshake (which its session waits for): the
    // client's next request may reach another node, which must find this one.
    let user = start.caller.user.as_ref().map(|u| u.as_str().to_owned());
    match state
        .node
        .backplane()
        .register_connection(&id, state.node.hubs()[hub].name(), user.as_deref())
        .await
    {
        Ok(true) => {}
        Ok(false) => return StatusCode::CONFLICT.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim an HTTP-transport connection");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let (calls, requests) = mpsc::channel(BRIDGE_QUEUE);
    state.node.add_bridge(id.clone(), calls);
    let node = state.node.clone();
    let upgraded = Upgraded {
        socket: Socket::new(server, Box::new(())),
        leftover: Bytes::new(),
    };
    state
        .sessions
        .spawn(run_session(upgraded, node.clone(), start));
    let (events, stream) = if sse {
        let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(BRIDGE_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    state
        .sessions
        .spawn(bridge(client, requests, events, node, id));
    match stream {
        Some(rx) => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(tokio_stream_of(rx)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        // The first poll is answered at once: the client knows it is connected.
        None => StatusCode::OK.into_response(),
    }
}

async fn run_session(upgraded: Upgraded, node: Arc<Node>, mut start: crate::session::SessionStart) {
    crate::session::run(upgraded, &node, &mut start).await;
}

fn tokio_stream_of(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Two connected loopback sockets: the session's end and the bridge's.
async fn socket_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, (server, _)) = (client?, accepted?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((server, client))
}

/// Carries bytes between the client's HTTP requests and its session until either ends.
async fn bridge(
    socket: TcpStream,
    mut calls: mpsc::Receiver<BridgeCall>,
    events: Option<mpsc::Sender<Result<Bytes, Infallible>>>,
    node: Arc<Node>,
    id: ConnectionId,
) {
    let (mut rd, mut wr) = socket.into_split();
    let mut from_session = BytesMut::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut waiting: Option<oneshot::Sender<Option<Vec<u8>>>> = None;
    let held_limit = node.limits().outbound_queue_bytes;
    let poll_deadline = tokio::time::sleep(POLL_WAIT);
    tokio::pin!(poll_deadline);
    loop {
        tokio::select! {
            // A client that stops polling leaves what its session wrote here; past this
            // the bridge stops reading, the pair's buffers fill, and the session's own
            // limits (write timeout, slow consumer) end the connection.
            read = rd.read_buf(&mut from_session), if pending.len() < held_limit => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let mut ended = false;
                while let Some(frame) = take_frame(&mut from_session) {
                    match frame {
                        Frame::Data(payload) => match &events {
                            Some(tx) => {
                                if tx.send(Ok(event(&payload))).await.is_err() {
                                    ended = true;
                                }
                            }
                            None => pending.extend_from_slice(&payload),
                        },
                        Frame::Close => ended = true,
                        Frame::Other => {}
                    }
                }
                if let Some(tx) = waiting.take_if(|_| !pending.is_empty()) {
                    let _ = tx.send(Some(std::mem::take(&mut pending)));
                }
                if ended {
                    break;
                }
            }
            call = calls.recv() => match call {
                Some(BridgeCall::Send(bytes, done)) => {
                    if wr.write_all(&client_frame(&bytes)).await.is_err() {
                        break;
                    }
                    let _ = done.send(());
                }
                Some(BridgeCall::Poll(tx)) => {
                    if pending.is_empty() {
                        // A newer poll replaces one still waiting, which gets nothing.
                        if let Some(old) = waiting.replace(tx) {
                            let _ = old.send(Some(Vec::new()));
                        }
                        poll_deadline.as_mut().reset(tokio::time::Instant::now() + POLL_WAIT);
                    } else {
                        let _ = tx.send(Some(std::mem::take(&mut pending)));
                    }
                }
                None => break,
            },
            () = &mut poll_deadline, if waiting.is_some() => {
                if let Some(tx) = waiting.take() {
                    let _ = tx.send(Some(Vec::new()));
                }
            }
        }
    }
    node.remove_bridge(&id);
    if node.registry().connection(&id).is_none() {
        // Its session never opened (no handshake in time): the claim goes.
        let _ = node.backplane().unregister_connection(&id).await;
    }
    if let Some(tx) = waiting.take() {
        let _ = tx.send(if pending.is_empty() {
            None
        } else {
            Some(pending)
        });
    }
    let _ = wr.shutdown().await;
}

/// One Server-Sent Event carrying `payload`: each of its lines behind `data: `.
fn event(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// A client frame for the session: binary (records may be either protocol's), masked
/// with a zero key (RFC 6455 requires the mask; any key will do).
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 14);
    out.push(0x82);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// A frame the session wrote.
enum Frame {
    Data(Bytes),
    Close,
    Other,
}

/// The next whole frame the session wrote (unmasked, final: [`crate::ws::Frame`]).
fn take_frame(buf: &mut BytesMut) -> Option<Frame> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let (len, header) = match second & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return None;
    }
    buf.advance(header);
    let payload = buf.split_to(len).freeze();
    Some(match first & 0x0f {
        0x1 | 0x2 => Frame::Data(payload),
        0x8 => Frame::Close,
        _ => Frame::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_frames_are_cut_whole_and_events_keep_each_line() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(crate::ws::Frame::text(b"{\"type\":6}\x1e").as_bytes());
        buf.extend_from_slice(&crate::ws::Frame::text(&[b'x'; 300]).as_bytes()[..100]);
        assert!(
            matches!(take_frame(&mut buf), Some(Frame::Data(p)) if &p[..] == b"{\"type\":6}\x1e")
        );
        assert!(
            take_frame(&mut buf).is_none(),
            "the second frame is not whole yet"
        );
        assert_eq!(&event(b"a\nb")[..], b"data: a\r\ndata: b\r\n\r\n");
        let f = client_frame(&[7; 200]);
        assert_eq!(&f[..4], &[0x82, 0x80 | 126, 0, 200]);
        assert_eq!(f.len(), 4 + 4 + 200);
    }
}
