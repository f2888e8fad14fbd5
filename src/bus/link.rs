//! The wire under a bus, whatever its protocol: a serial port (an RS-485 adapter) or a TCP
//! connection (Modbus TCP, or a transparent serial server), opened with the line's settings and
//! a connect timeout; stale input discarded before each request; the peer closing noticed.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_serial::SerialPortBuilderExt;

use super::PollError;
use crate::config::{Link, Parity, SerialConfig};

/// A serial port with the line's settings, its buffers cleared.
pub fn open_serial(s: &SerialConfig) -> std::io::Result<tokio_serial::SerialStream> {
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = match s.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if s.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(s.device.to_string_lossy(), s.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .and_then(|port| {
            // Late replies from an earlier transaction must not be read as this one's.
            use tokio_serial::SerialPort;
            port.clear(tokio_serial::ClearBuffer::All)?;
            Ok(port)
        })
        .map_err(std::io::Error::from)
}

/// A serial port or a TCP connection.
#[derive(Debug)]
pub enum Stream {
    Serial(tokio_serial::SerialStream),
    Tcp(TcpStream),
}

/// Open `link`: the serial device, or a TCP connection within `timeout`.
pub async fn open(link: &Link, timeout: Duration) -> Result<Stream, PollError> {
    Ok(match link {
        Link::Serial(s) => Stream::Serial(
            open_serial(s)
                .map_err(|e| PollError::Link(format!("cannot open {}: {e}", s.device.display())))?,
        ),
        Link::Tcp(addr) => {
            let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| PollError::Link(format!("connect to {addr} timed out")))?
                .map_err(|e| PollError::Link(format!("connect to {addr}: {e}")))?;
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }
    })
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Serial(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Serial(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Serial(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Serial(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl DiscardInput for Stream {
    fn discard_input(&mut self) {
        match self {
            Stream::Serial(s) => s.discard_input(),
            Stream::Tcp(s) => s.discard_input(),
        }
    }
}

/// A transport that discards unread input when a new request starts (the first write after a
/// read). RTU frames carry no transaction id: without this, a reply that arrives after its
/// request timed out would be taken as the answer to the next identical request. It also
/// notes when the peer closed the stream: tokio-modbus reports that end of stream as
/// whatever the last OS error happened to be ("Operation now in progress").
#[derive(Debug)]
pub struct FreshInput<T> {
    inner: T,
    reading: bool,
    closed: Arc<AtomicBool>,
}

pub trait DiscardInput {
    fn discard_input(&mut self);
}

impl DiscardInput for tokio_serial::SerialStream {
    fn discard_input(&mut self) {
        use tokio_serial::SerialPort;
        let _ = self.clear(tokio_serial::ClearBuffer::Input);
    }
}

impl DiscardInput for TcpStream {
    fn discard_input(&mut self) {
        let mut junk = [0u8; 256];
        while matches!(self.try_read(&mut junk), Ok(n) if n > 0) {}
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FreshInput<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reading = true;
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + DiscardInput + Unpin> tokio::io::AsyncWrite for FreshInput<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.reading {
            self.reading = false;
            self.inner.discard_input();
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `inner`, discarding stale input before each request and setting `closed` when the peer
/// closes the stream.
pub fn fresh<T>(inner: T, closed: &Arc<AtomicBool>) -> FreshInput<T> {
    closed.store(false, Ordering::Relaxed);
    FreshInput {
        inner,
        reading: false,
        closed: closed.clone(),
    }
}
