//! The HTTPS accept loop. It is hand-written (not `axum::serve`) so the "down" fault can close
//! the port for real and cut connections that clients keep alive.

use super::faults::DownMode;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Listener {
    pub addr: SocketAddr,
    pub acceptor: TlsAcceptor,
    pub router: Router,
    pub down: watch::Receiver<DownMode>,
    pub shutdown: watch::Receiver<bool>,
}

impl Listener {
    /// Serves until shutdown. While `DownMode::Refuse` is set the socket is closed, so
    /// connecting fails with "connection refused"; it is bound again on the same address after.
    pub async fn run(mut self, listener: TcpListener) {
        let mut listener = Some(listener);
        loop {
            if *self.down.borrow_and_update() == DownMode::Refuse {
                listener = None;
                tokio::select! {
                    changed = self.down.changed() => if changed.is_err() { return },
                    _ = self.shutdown.changed() => return,
                }
                continue;
            }
            let current = match listener.take() {
                Some(l) => l,
                None => match TcpListener::bind(self.addr).await {
                    Ok(l) => l,
                    Err(error) => {
                        tracing::warn!(%error, addr = %self.addr, "re-binding the test server port");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                accepted = current.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(self.connection(stream));
                    }
                }
                changed = self.down.changed() => if changed.is_err() { return },
                _ = self.shutdown.changed() => return,
            }
            listener = Some(current);
        }
    }

    fn connection(&self, stream: TcpStream) -> impl Future<Output = ()> + use<> {
        let acceptor = self.acceptor.clone();
        let router = self.router.clone();
        let mut down = self.down.clone();
        let mut shutdown = self.shutdown.clone();
        async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            tokio::select! {
                _ = conn => {}
                _ = down.wait_for(|mode| *mode == DownMode::Refuse) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
