//! faultd in-process: the same gRPC service over an in-memory transport, for clients (faultctl) that
//! find no daemon to talk to.

use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::engine::{Engine, EngineError, Limits};

/// Bytes buffered in each direction of an in-memory connection.
const PIPE_BUFFER: usize = 1 << 20;

/// Starts an engine in this process and returns a channel to its gRPC service.
///
/// The engine lives as long as the runtime that serves it; its sessions are torn down by their leases
/// or when the process exits (services die with it through their parent-death signal).
pub async fn channel() -> Result<Channel, EngineError> {
    channel_with_limits(Limits::default()).await
}

/// [`channel`] to an engine with other limits.
pub async fn channel_with_limits(limits: Limits) -> Result<Channel, EngineError> {
    let engine = Engine::start_with(limits).await?;
    let router = crate::server::router(engine).await;
    let (conn_tx, conn_rx) = mpsc::channel::<std::io::Result<tokio::io::DuplexStream>>(4);
    tokio::spawn(router.serve_with_incoming(ReceiverStream::new(conn_rx)));
    let channel = Endpoint::from_static("http://faultd.embedded")
        .connect_with_connector(tower::service_fn(move |_| {
            let conn_tx = conn_tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(PIPE_BUFFER);
                conn_tx
                    .send(Ok(server))
                    .await
                    .map_err(|_| std::io::Error::other("the embedded faultd stopped"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }))
        .await
        .map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    Ok(channel)
}
