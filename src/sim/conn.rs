//! Connections that a handler can hang up on, for the `--drop-before` / `--drop-after` faults: the
//! client must see its connection closed with no HTTP answer at all, the "unknown outcome" case
//! that a real network produces.
//!
//! axum gives a handler no way to close its connection, so the simulator accepts connections
//! through its own [`Listener`], which wraps each socket with a shared [`Hangup`] switch and hands
//! the switch to handlers as connect info. A handler that flips the switch makes every later read
//! and write on that socket fail: hyper cannot write the response (not even its status line), gives
//! up on the connection and drops the socket, and the client reads end-of-stream before any answer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The simulator's listener: a TCP listener whose connections can be hung up on.
pub(crate) struct HangupListener(pub TcpListener);

/// One accepted connection.
pub(crate) struct Conn {
    stream: TcpStream,
    hangup: Hangup,
}

/// The switch that hangs up a connection, given to handlers through `ConnectInfo<Hangup>`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hangup(Arc<AtomicBool>);

impl Hangup {
    /// Close the connection without answering: nothing more is read or written on it.
    pub(crate) fn hang_up(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

fn hung_up() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "hung up by the simulator")
}

impl Listener for HangupListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        // Answers are small and written whole: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            hangup: Hangup::default(),
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, HangupListener>> for Hangup {
    fn connect_info(stream: IncomingStream<'_, HangupListener>) -> Hangup {
        stream.io().hangup.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.hangup.is_set() {
            return Poll::Ready(Err(hung_up()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.hangup.is_set() {
            return Poll::Ready(Err(hung_up()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.hangup.is_set() {
            return Poll::Ready(Err(hung_up()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.hangup.is_set() {
            return Poll::Ready(Err(hung_up()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
