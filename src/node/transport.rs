//! HTTP transports (Server-Sent Events, long polling) without sticky sessions: a
//! connection lives on the node that took its first request, behind a bridge that
//! feeds its session; a POST or a poll that reaches another node is carried to that one
//! over its control channel, and the answer comes back the same way.

use tokio::sync::{mpsc, oneshot};

use super::dispatch::bad_envelope;
use super::remote::ACK_TIMEOUT;
use super::{Node, NodeError};
use crate::envelope::{now_micros, Envelope, Kind, TransportReply, TransportRequest};
use crate::ids::ConnectionId;

/// What a bridge is asked.
#[derive(Debug)]
pub enum BridgeCall {
    /// Bytes the client POSTed; answered once they are handed to the session.
    Send(Vec<u8>, oneshot::Sender<()>),
    /// A poll: what the session sent since the last one (empty when nothing came in
    /// time), or `None` when the connection ended.
    Poll(oneshot::Sender<Option<Vec<u8>>>),
}

impl Node {
    /// Makes `bridge` the way to connection `id`'s session on this node.
    pub fn add_bridge(&self, id: ConnectionId, bridge: mpsc::Sender<BridgeCall>) {
        self.bridges().insert(id, bridge);
    }

    /// The bridge of `id` ended.
    pub fn remove_bridge(&self, id: &ConnectionId) {
        self.bridges().remove(id);
    }

    /// Whether this node holds the bridge of `id`.
    pub fn has_bridge(&self, id: &ConnectionId) -> bool {
        self.bridges().contains_key(id)
    }

    /// A POST (`Some(data)`) or a poll (`None`) for connection `id`, on whichever node
    /// holds it. A poll's answer is `Some(bytes)`; `None` means the connection is gone.
    ///
    /// # Errors
    /// [`NodeError::UnknownConnection`] when no node holds a bridge for it, or the
    /// backplane.
    pub async fn transport_call(
        &self,
        hub: usize,
        id: &ConnectionId,
        data: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let local = self.bridges().get(id).cloned();
        if let Some(bridge) = local {
            return Ok(call(&bridge, data).await);
        }
        let owner = self.remote_owner(hub, id).await?;
        let body = |nonce| {
            serde_json::to_vec(&TransportRequest {
                reply_to: self.id.clone(),
                nonce,
                data,
            })
            .unwrap_or_default()
        };
        // A poll waits on the owner up to its own deadline, shorter than this.
        self.ask_owner(
            &self.transport_replies,
            &owner,
            Kind::Transport,
            id,
            body,
            POLL_WAIT + ACK_TIMEOUT,
        )
        .await
    }

    /// Applies a request another node carried here, and answers it.
    pub(super) async fn transport_request(&self, id: &ConnectionId, request: TransportRequest) {
        let local = self.bridges().get(id).cloned();
        let data = match local {
            Some(bridge) => call(&bridge, request.data).await,
            None => None,
        };
        let body = serde_json::to_vec(&TransportReply {
            nonce: request.nonce,
            data,
        })
        .unwrap_or_default();
        let payload = Envelope::encode(Kind::TransportReply, now_micros(), b"", b"", &body);
        if let Err(e) = self
            .backplane
            .publish(&self.keys.node_channel(&request.reply_to), payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a transport request");
        }
    }

    /// The answer to a request this node carried to another.
    pub(super) fn transport_reply(&self, body: &[u8]) {
        match serde_json::from_slice::<TransportReply>(body) {
            Ok(reply) => {
                if let Some(tx) = self.transport_replies().remove(&reply.nonce) {
                    let _ = tx.send(reply.data);
                }
            }
            Err(_) => bad_envelope("node", "transport reply is not valid"),
        }
    }

    fn bridges(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ConnectionId, mpsc::Sender<BridgeCall>>>
    {
        self.bridges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transport_replies(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, oneshot::Sender<Option<Vec<u8>>>>>
    {
        self.transport_replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a poll waits for the session to send something.
pub const POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn call(bridge: &mpsc::Sender<BridgeCall>, data: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let (tx, rx) = oneshot::channel();
    match data {
        Some(bytes) => {
            let (done, sent) = oneshot::channel();
            bridge.send(BridgeCall::Send(bytes, done)).await.ok()?;
            sent.await.ok()?;
            drop(tx);
            Some(Vec::new())
        }
        None => {
            bridge.send(BridgeCall::Poll(tx)).await.ok()?;
            rx.await.ok().flatten()
        }
    }
}
