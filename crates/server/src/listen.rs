//! The accept loop: HTTP/1.1 connections served by hyper with a header read timeout
//! (the body's is in the middleware, which can answer 408), and a shutdown bounded by
//! the grace time — connections still open then (a stalled upload, a long generation
//! cut off) are dropped, so the process always exits in about `grace`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::AppState;

/// After the grace time, how long cut-off responses get to send their error event.
const FLUSH: Duration = Duration::from_millis(1000);

/// Serves `router(state)` on `listener` until `shutdown` completes; then stops
/// accepting, lets running requests go on for `grace`, cancels the generations left
/// (their clients get an error event or a 503) and returns once they are answered, at
/// most a second later.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = crate::router(state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Streamed tokens go out as soon as they are written.
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    state.scheduler.close();
    // Idle keep-alive connections close now; the others when their response ends.
    let all_closed = connections.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        _ = &mut all_closed => return Ok(()),
        _ = tokio::time::sleep(grace) => {}
    }
    let s = state.scheduler.status();
    if s.active + s.queued > 0 {
        tracing::warn!(
            "grace time over: cutting off {} running and {} queued requests (clients get an error)",
            s.active,
            s.queued
        );
    }
    state.scheduler.cancel_all();
    // The cancelled generations end at the scheduler's next step; their responses then
    // carry the error. Requests still being uploaded or read are not waited for.
    let flushed = async {
        loop {
            let s = state.scheduler.status();
            if s.active + s.queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::select! {
        _ = &mut all_closed => {}
        _ = tokio::time::timeout(FLUSH, flushed) => {
            tracing::info!("closing the connections still open");
        }
    }
    Ok(())
}
