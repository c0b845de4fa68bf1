//! A stand-in upstream replicator the test controls payload by payload: it
//! answers subscriptions (challenge, then accept; spec: control.md), forgets
//! unsubscribers, and sends what it is told. It speaks plain UDP, so daemons fed
//! by it run with `insecure_plain_udp` (DTLS links are tested in tests/dtls.rs).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ivip_wire::control::Control;

/// The upstream; stopped on drop.
pub struct FakeUpstream {
    sock: Arc<UdpSocket>,
    subs: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Listen on a loopback port; accepted subscriptions are told to expire
    /// after `expiry_ms` without a keepalive.
    pub fn start(expiry_ms: u32) -> FakeUpstream {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let subs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, l, st) = (sock.clone(), subs.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                match Control::parse(&buf[..n]) {
                    Ok(Control::Subscribe {
                        nonce, cookie: 0, ..
                    }) => {
                        let c = Control::Challenge { nonce, cookie: 42 };
                        let _ = s.send_to(&c.to_bytes(), from);
                    }
                    Ok(Control::Subscribe { nonce, .. }) => {
                        let c = Control::Accept {
                            nonce,
                            keepalive_ms: 300,
                            expiry_ms,
                        };
                        let _ = s.send_to(&c.to_bytes(), from);
                        let mut v = l.lock().unwrap();
                        if !v.contains(&from) {
                            v.push(from);
                        }
                    }
                    Ok(Control::Unsubscribe { .. }) => l.lock().unwrap().retain(|a| *a != from),
                    _ => {}
                }
            }
        });
        FakeUpstream {
            sock,
            subs,
            stop,
            thread: Some(thread),
        }
    }

    /// Its address, as a config file names it.
    pub fn addr(&self) -> String {
        self.sock.local_addr().unwrap().to_string()
    }

    /// The subscribers it has accepted.
    pub fn subscribers(&self) -> Vec<SocketAddr> {
        self.subs.lock().unwrap().clone()
    }

    /// Send `bytes` to every subscriber; a failed send fails the test.
    pub fn send(&self, bytes: &[u8]) {
        for a in self.subs.lock().unwrap().iter() {
            self.sock.send_to(bytes, a).unwrap();
        }
    }

    /// Send `bytes` to every subscriber but those in `skip`.
    pub fn send_except(&self, bytes: &[u8], skip: &[SocketAddr]) {
        for a in self
            .subs
            .lock()
            .unwrap()
            .iter()
            .filter(|a| !skip.contains(a))
        {
            let _ = self.sock.send_to(bytes, a);
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
