//! The records a client sends, once the connection is open: hub method calls (answered
//! in the connection's protocol), pings, closes, and stateful reconnect's numbering.

use super::replies::Replies;
use super::resume::ACK_INTERVAL;
use super::Session;
use crate::connection::close::CloseReason;
use crate::hub::CallError;
use crate::metrics as m;
use crate::protocol::message::ClientMessage;
use crate::protocol::{msgpack, HubProtocol};
use tokio::time::Instant;

impl Session<'_> {
    /// Handles every complete record buffered. `Some` ends the session.
    pub(super) async fn process_records(&mut self) -> Option<CloseReason> {
        loop {
            let record = match self.reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    tracing::info!(connection = %self.caller.connection_id, error = %e, "record too large");
                    return Some(CloseReason::Protocol(format!("InvalidDataException: {e}")));
                }
            };
            let parsed = match self.protocol {
                HubProtocol::Json => ClientMessage::parse(&record),
                HubProtocol::MessagePack => msgpack::parse(&record),
            };
            let msg = match parsed {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(connection = %self.caller.connection_id, error = %e, "protocol error");
                    return Some(CloseReason::Protocol(e.to_string()));
                }
            };
            if msg.is_trackable() && self.stateful {
                let id = self.client_next;
                self.client_next += 1;
                if id <= self.handle.received() {
                    // Sent again after a resume, and processed before it.
                    continue;
                }
                self.handle.receive();
                self.ack_due
                    .get_or_insert_with(|| Instant::now() + ACK_INTERVAL);
            }
            if let Some(reason) = self.handle_message(msg).await {
                return Some(reason);
            }
        }
    }

    async fn handle_message(&mut self, msg: ClientMessage) -> Option<CloseReason> {
        match msg {
            ClientMessage::Ping | ClientMessage::CancelInvocation { .. } | ClientMessage::Unknown(_) => None,
            ClientMessage::Close { .. } => Some(CloseReason::ClientClosed),
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                let outcome = if self.invocations.take().is_err() {
                    Err(CallError::RateLimited)
                } else if stream_ids.is_empty() {
                    Box::pin(self.node.invoke(self.hub, self.caller, &target, &arguments)).await
                } else {
                    Err(CallError::ArgumentCount {
                        given: arguments.len() + stream_ids.len(),
                        expected: arguments.len(),
                    })
                };
                let mut out = Replies::new(self.protocol);
                match outcome {
                    Ok(replies) => {
                        for (event, args) in replies {
                            out.invocation(&event, args);
                        }
                        if let Some(id) = &invocation_id {
                            out.completion(id, None);
                        }
                    }
                    Err(e) => {
                        metrics::counter!(m::INVOCATIONS_REFUSED, "hub" => self.hub_name.to_owned(), "reason" => call_error_label(&e))
                            .increment(1);
                        tracing::debug!(connection = %self.caller.connection_id, method = %target, error = %e, "invocation refused");
                        if let Some(id) = &invocation_id {
                            out.completion(id, Some(&e.completion_text(&target)));
                        }
                    }
                }
                let trackable = out.count();
                out.frame().and_then(|f| self.send_own(f, trackable).err())
            }
            ClientMessage::StreamInvocation { invocation_id, target } => {
                let text = format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                );
                let mut out = Replies::new(self.protocol);
                out.completion(&invocation_id, Some(&text));
                out.frame().and_then(|f| self.send_own(f, 1).err())
            }
            ClientMessage::StreamItem { .. } | ClientMessage::Completion { .. } => Some(CloseReason::Protocol(
                "InvalidDataException: Unexpected stream item or completion: this server starts no streams and invokes no client methods.".into(),
            )),
            ClientMessage::Ack { sequence_id } if self.stateful => {
                self.handle.ack(sequence_id);
                None
            }
            ClientMessage::Sequence { sequence_id } if self.stateful => {
                // What follows is sent again from this id: repeats are dropped by id.
                self.client_next = sequence_id;
                None
            }
            ClientMessage::Ack { .. } | ClientMessage::Sequence { .. } => Some(CloseReason::Protocol(
                "InvalidDataException: Ack and Sequence messages need stateful reconnect, which was not negotiated.".into(),
            )),
        }
    }
}

fn call_error_label(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownMethod => "unknown_method",
        CallError::ArgumentCount { .. } | CallError::Binding => "bad_arguments",
        CallError::Unauthorized => "unauthorized",
        CallError::MissingClaim(_) => "missing_claim",
        CallError::InvalidGroup(_) => "invalid_group",
        CallError::TooManyGroups(_) => "too_many_groups",
        CallError::RateLimited => "rate_limited",
        CallError::Unavailable => "unavailable",
    }
}
