//! Tiny TCP/UDP servers and clients living in named namespaces, via `setns` on a fresh
//! thread (it changes only that thread's namespace, never the test process's).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// How long a probe waits; dropped packets are silent, so every "unreachable" costs this.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// TCP ports served on every address of the internet namespace.
pub const TCP_PORTS: [u16; 3] = [80, 443, 7000];
/// UDP: 53 stands in for DNS, 5353 for any other UDP service.
pub const UDP_PORTS: [u16; 2] = [53, 5353];

pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
    setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a thread inside `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Servers answering with `"<local addr> <peer addr>"`, so a client learns which address it
/// reached and what source address (after NAT) the server saw.
pub struct Servers {
    stop: Arc<AtomicBool>,
    /// Every TCP connection that sent data: (bytes, seconds from first to last byte).
    pub transfers: Arc<Mutex<Vec<(u64, f64)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// TCP listeners bind 0.0.0.0 (TCP replies from the address dialled); UDP binds each
    /// address, because a 0.0.0.0 UDP socket would answer from whatever address routing picks.
    pub fn start(ns: &str, addrs: &[Ipv4Addr]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let transfers = Arc::new(Mutex::new(vec![]));
        let mut threads = vec![];
        let (tx, rx) = mpsc::channel();
        let mut binds: Vec<(bool, SocketAddr)> = TCP_PORTS
            .iter()
            .map(|p| (true, SocketAddr::from(([0, 0, 0, 0], *p))))
            .collect();
        for a in addrs {
            for p in UDP_PORTS {
                binds.push((false, SocketAddr::from((*a, p))));
            }
        }
        for (tcp, addr) in binds.clone() {
            let (ns, stop, tx) = (ns.to_string(), stop.clone(), tx.clone());
            let log = transfers.clone();
            threads.push(std::thread::spawn(move || {
                enter(&ns);
                if tcp {
                    serve_tcp(addr, &stop, &tx, &log)
                } else {
                    serve_udp(addr, &stop, &tx)
                }
            }));
        }
        for _ in &binds {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("server bound");
        }
        Servers {
            stop,
            transfers,
            threads,
        }
    }
}

fn serve_tcp(
    addr: SocketAddr,
    stop: &AtomicBool,
    ready: &mpsc::Sender<()>,
    log: &Mutex<Vec<(u64, f64)>>,
) {
    let l = TcpListener::bind(addr).expect("bind tcp");
    l.set_nonblocking(true).unwrap();
    ready.send(()).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, peer)) => {
                let local = s.local_addr().unwrap();
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(format!("{local} {peer}\n").as_bytes());
                // Drain whatever the client sends (throughput tests), then close.
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = vec![0u8; 1 << 16];
                let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    last = Instant::now();
                    first.get_or_insert(last);
                    bytes += n as u64;
                }
                if let Some(f) = first {
                    log.lock().unwrap().push((bytes, (last - f).as_secs_f64()));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_udp(addr: SocketAddr, stop: &AtomicBool, ready: &mpsc::Sender<()>) {
    let s = UdpSocket::bind(addr).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    ready.send(()).unwrap();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{addr} {peer}\n").as_bytes(), peer);
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The banner of the TCP server at `addr:port`, as seen from inside `ns`; `None` if
/// unreachable within [`PROBE_TIMEOUT`].
pub fn tcp_fetch(ns: &str, addr: Ipv4Addr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&(addr, port).into(), PROBE_TIMEOUT).ok()?;
        s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let mut line = [0u8; 128];
        let n = s.read(&mut line).ok()?;
        Some(String::from_utf8_lossy(&line[..n]).trim().to_string())
    })
}

/// Same for UDP: one datagram out, one answer back.
pub fn udp_fetch(ns: &str, addr: Ipv4Addr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect((addr, port)).ok()?;
        s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        s.send(b"hi").ok()?;
        let mut buf = [0u8; 128];
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })
}
