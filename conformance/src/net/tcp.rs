//! TCP peers on loopback: an echo server (reads until the client ends its side, answers
//! everything back, closes), a server that accepts and never answers, and an address nothing
//! listens on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Context, Error, Result};
use crate::net::EXCHANGE_LIMIT;

pub struct Echo {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start() -> Result<Echo> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .doing("binding the echo server")?;
        let addr = listener.local_addr().doing("the echo server's address")?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    if tcp.read_to_end(&mut all).await.is_ok() {
                        // Recorded before the echo, so a client that has its answer finds it.
                        recorded
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(all.clone());
                        let _ = tcp.write_all(&all).await;
                    }
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Ok(Echo {
            addr,
            received,
            task,
        })
    }

    /// What each connection sent, in the order they ended.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A server that accepts connections and holds them without ever answering.
pub struct Hang {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hang {
    pub async fn start() -> Result<Hang> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .doing("binding the silent server")?;
        let addr = listener.local_addr().doing("the silent server's address")?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Ok(Hang { addr, task })
    }
}

/// A loopback address nothing listens on (bound, then let go).
pub fn dead_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").doing("finding a free port")?;
    listener.local_addr().doing("a free port's address")
}

/// Connects to `addr`, sends `data`, ends its side, and reads until the other side closes.
pub async fn exchange(addr: SocketAddr, data: &[u8]) -> Result<Vec<u8>> {
    let run = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .doing("connecting over TCP")?;
        tcp.write_all(data).await.doing("writing")?;
        tcp.shutdown().await.doing("ending the client's side")?;
        let mut answer = Vec::new();
        // A reset after the data counts as the end: what matters is what arrived.
        let _ = tcp.read_to_end(&mut answer).await;
        Ok::<_, Error>(answer)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, run)
        .await
        .map_err(|_| Error("a TCP exchange took longer than its limit".into()))?
}

/// Connects to `addr`, sends `data` without ending its side, and reads until the proxy closes
/// the connection.
pub async fn send_and_wait_for_close(addr: SocketAddr, data: &[u8]) -> Result<Vec<u8>> {
    let run = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .doing("connecting over TCP")?;
        tcp.write_all(data).await.doing("writing")?;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        Ok::<_, Error>(answer)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, run)
        .await
        .map_err(|_| Error("the proxy did not close the connection".into()))?
}
