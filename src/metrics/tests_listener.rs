//! The admin listener over real sockets: a stuck worker delays only the admin API, and the
//! listener's connection bounds hold.

use super::admin::{AdminReceiver, AdminRequest};
use super::collect::{registry, TurndCollector};
use super::http::{self, Limits};
use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Generous bound on any answer that must come: a wait, not a latency assertion.
const ANSWER: Duration = Duration::from_secs(5);
/// How long to listen for an answer that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// An admin listener on 127.0.0.1:0 with one worker whose requests the test receives (and
/// may never answer), on its own thread and runtime as in turnd; stops when dropped.
struct Listener {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(limits: Limits) -> (Listener, AdminReceiver) {
        let (admin_tx, admin_rx) = tokio::sync::mpsc::unbounded_channel();
        let router = Router::new(
            registry(TurndCollector {
                workers: vec![Arc::new(WorkerMetrics::default())],
                shared: None,
                xdp: None,
            }),
            Arc::new(AtomicBool::new(true)),
            vec![admin_tx],
            None,
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stop = async move {
                    let _ = stopped.await;
                };
                http::serve(listener, Arc::new(router), stop, limits).await;
            });
        });
        let l = Listener {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        };
        (l, admin_rx)
    }

    /// A connection that has sent `GET path`.
    fn request(&self, path: &str) -> TcpStream {
        let mut s = TcpStream::connect_timeout(&self.addr, ANSWER).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The whole answer on `s` (the server closes after it), within [`ANSWER`].
fn answer_on(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(ANSWER)).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// True when nothing at all arrives on `s` for [`QUIET`].
fn silent(s: &TcpStream) -> bool {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut b = [0u8; 1];
    matches!(
        (&*s).read(&mut b),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    )
}

/// One worker does not answer the admin API: `/allocations` waits for it, while `/healthz`,
/// `/readyz` and `/metrics` are answered meanwhile on the same runtime. The waiting request
/// is still served afterwards (the runtime was never blocked), and a worker that never
/// answers gets a 504 rather than a hang.
#[test]
fn a_stuck_worker_delays_only_the_admin_api() {
    let (listener, mut worker) = Listener::start(Limits::ADMIN);
    let waiting = listener.request("/allocations");
    // The listener is now inside the admin API's wait: it asked the worker, who holds on.
    let Some(AdminRequest::List(answer)) = worker.blocking_recv() else {
        panic!("the listener did not ask the worker");
    };
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)] {
        let got = answer_on(listener.request(path));
        assert_eq!(
            status(&got),
            want,
            "{path} while a worker is stuck: {got:?}"
        );
    }
    // The worker answers at last: the waiting request gets its list, not a timeout.
    answer.send(Vec::new()).unwrap();
    let got = answer_on(waiting);
    assert_eq!(status(&got), 200, "{got:?}");
    assert!(got.ends_with("{\"allocations\":[]}\n"), "{got:?}");

    // A worker that never answers: 504 after the bounded wait.
    let waiting = listener.request("/allocations");
    let Some(AdminRequest::List(_held)) = worker.blocking_recv() else {
        panic!("the listener did not ask the worker");
    };
    assert_eq!(status(&answer_on(listener.request("/healthz"))), 200);
    let got = answer_on(waiting);
    assert_eq!(status(&got), 504, "{got:?}");
}

/// The bound on connections served at once: with every slot held by an idle connection, a
/// further one waits in the kernel's queue, unanswered; it is answered as soon as one slot
/// frees. And an idle connection loses its slot at the head timeout.
#[test]
fn admin_connections_are_capped_and_idle_ones_lose_their_slot() {
    const SLOTS: usize = 4;
    // A head timeout no test step reaches: the slots stay held until the test frees one.
    let (listener, _worker) = Listener::start(Limits {
        max_connections: SLOTS,
        head_timeout: Duration::from_secs(60),
        deadline: Duration::from_secs(60),
    });
    let mut idle: Vec<TcpStream> = (0..SLOTS)
        .map(|_| TcpStream::connect_timeout(&listener.addr, ANSWER).unwrap())
        .collect();
    // Each idle connection is taken by the server before the next step (a served request
    // after them would prove it, but it cannot be served: the slots are full). Their
    // accepting is ordered by the kernel's queue, so the next connection queues behind them.
    let extra = listener.request("/healthz");
    assert!(
        silent(&extra),
        "answered beyond {SLOTS} connections at once"
    );
    // One idle connection goes: its slot serves the queued request.
    drop(idle.pop());
    assert_eq!(status(&answer_on(extra)), 200);
    drop(idle);

    // The head timeout: a connection that sends nothing is closed by the server.
    let (listener, _worker) = Listener::start(Limits {
        max_connections: SLOTS,
        head_timeout: Duration::from_millis(200),
        deadline: Duration::from_secs(60),
    });
    let held: Vec<TcpStream> = (0..SLOTS)
        .map(|_| TcpStream::connect_timeout(&listener.addr, ANSWER).unwrap())
        .collect();
    for mut s in held {
        s.set_read_timeout(Some(ANSWER)).unwrap();
        let mut text = String::new();
        let closed = s.read_to_string(&mut text);
        assert!(
            matches!(closed, Ok(0)),
            "an idle connection was not closed without an answer: {closed:?} {text:?}"
        );
    }
    // Closed, not just silent: the slots are free for requests again.
    assert_eq!(status(&answer_on(listener.request("/healthz"))), 200);
}
