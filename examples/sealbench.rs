use ivip::dtls::link::{Wire, pump};
use ivip::dtls::*;
use ivip::metrics::Registry;
use ivip::net::SockAddr;
use std::net::SocketAddr;
struct Null(usize);
impl Wire for Null {
    fn transmit(&mut self, _to: &SockAddr, b: &[u8]) {
        self.0 += b.len();
    }
}
fn main() {
    let ia = Identity::generate(KeyKind::P256, "a").unwrap();
    let ib = Identity::generate(KeyKind::P256, "b").unwrap();
    let pa: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mk = |me: &Identity, o: &Identity| {
        Link::new(
            me,
            PinSet::new(vec![Pin {
                name: "x".into(),
                fingerprint: o.fingerprint(),
                addresses: vec![],
            }]),
            Limits {
                half_open_max: 1000,
                half_open_per_ip_max: 1000,
                hello_per_ip_per_s: 100000,
                ..Limits::default()
            },
            &Registry::new(),
            "x",
        )
        .unwrap()
    };
    let a = mk(&ia, &ib);
    for k in [1usize, 20, 100] {
        let mut peers = vec![];
        for i in 0..k {
            let pb: SocketAddr = format!("127.0.1.{}:{}", i % 250 + 1, 1000 + i + 100 * k)
                .parse()
                .unwrap();
            let b = mk(&ib, &ia);
            assert!(pump(&a, pa, &b, pb, b"hi", 20));
            peers.push((pb, b));
        }
        let p = vec![7u8; 502];
        let n = 400_000 / k * k;
        let mut w = Null(0);
        let t = std::time::Instant::now();
        let s = a.sealer();
        for _ in 0..n / k {
            for (pb, _) in &peers {
                s.seal(ivip::time::Instant(1), *pb, &p, &mut w);
            }
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "fanout {k}: {:.0} seals/s ({:.2} us)",
            n as f64 / dt,
            dt * 1e6 / n as f64
        );
    }
}
