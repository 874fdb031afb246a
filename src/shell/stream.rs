//! A client's byte stream, plain TCP or TLS, driven without a runtime: non-blocking reads and
//! writes that answer `WouldBlock` when the socket has nothing more, as a plain socket does.
//!
//! TLS is rustls's `ServerConnection` run by hand (`read_tls`, `process_new_packets`,
//! `write_tls` on the non-blocking socket). Two things differ from a plain socket and the loop
//! must know them: rustls may hold decrypted bytes the socket no longer shows as readable
//! ([`Stream::buffered`]: the loop comes back next turn), and records it could not write yet
//! ([`Stream::wants_write`]: the loop waits for writability).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use tokio_rustls::rustls::ServerConnection;

/// A client connection's stream.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: rustls's state is some kilobytes, and most connections are plain TCP.
    Tls(Box<Tls>),
}

pub struct Tls {
    sock: TcpStream,
    conn: ServerConnection,
    /// The last read filled the caller's buffer from rustls's: more may wait there.
    more: bool,
}

impl Stream {
    pub fn tls(sock: TcpStream, conn: ServerConnection) -> Stream {
        Stream::Tls(Box::new(Tls {
            sock,
            conn,
            more: false,
        }))
    }

    /// The socket under the stream (to register it, and for its addresses).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Still in the TLS handshake.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Stream::Tls(t) if t.conn.is_handshaking())
    }

    /// The negotiated ALPN protocol and TLS version, for the handshake's log line.
    pub fn tls_info(&self) -> Option<(String, String)> {
        let Stream::Tls(t) = self else {
            return None;
        };
        let alpn = t
            .conn
            .alpn_protocol()
            .map_or_else(|| "-".into(), |p| String::from_utf8_lossy(p).into_owned());
        Some((alpn, format!("{:?}", t.conn.protocol_version())))
    }

    /// Drives the TLS handshake as far as the socket allows: `Ok(())` once it is done (at
    /// once for plain TCP), `WouldBlock` while it waits for the client.
    pub fn handshake(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Tls(t) => t.handshake(),
        }
    }

    /// Reads what the client sent (plaintext for TLS): `Ok(0)` at its end of stream,
    /// `WouldBlock` when nothing more is there now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }

    /// Takes bytes for the client and writes them out as far as the socket takes them.
    /// Returns how many were taken (over TLS, some may wait in rustls as records:
    /// [`Stream::wants_write`]); `WouldBlock` when none could be.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// Writes TLS records still waiting; `WouldBlock` when some remain.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Tls(t) => t.flush(),
        }
    }

    /// TLS records are waiting for the socket to take them.
    pub fn wants_write(&self) -> bool {
        matches!(self, Stream::Tls(t) if t.conn.wants_write())
    }

    /// rustls holds decrypted bytes not read yet: the socket will not say so.
    pub fn buffered(&self) -> bool {
        match self {
            Stream::Tcp(_) => false,
            Stream::Tls(t) => t.more,
        }
    }

    /// Ends the sending side politely, without waiting: a close_notify alert first over TLS
    /// (so the client sees a clean end, not a truncation it must treat as an attack, RFC 8446
    /// §6.1), then a TCP FIN. What the socket does not take now is lost; what it took, the
    /// kernel still sends after the socket is closed.
    pub fn shutdown(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}

impl Tls {
    fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.process()?;
        }
        Ok(())
    }

    /// Processes the records read, and sends what rustls answers (handshake messages, an
    /// alert, a KeyUpdate answer) as far as the socket takes it.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            // Send the alert rustls queued, then give up on the connection.
            let _ = self.flush();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        match self.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.more = false;
        loop {
            match self.conn.reader().read(buf) {
                // 0: the client's close_notify.
                Ok(n) => {
                    self.more = n > 0 && n == buf.len();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted: read records from the socket.
            match self.conn.read_tls(&mut self.sock) {
                // The client closed the socket without a close_notify.
                Ok(0) => return Ok(0),
                Ok(_) => self.process()?,
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls takes plaintext up to its buffer limit (64 KiB by default) and encrypts it.
        let taken = self.conn.writer().write(buf)?;
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => {}
            Err(e) => return Err(e),
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}
