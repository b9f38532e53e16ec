//! The seal applied to this test binary (its own process: every integration test file
//! is one), then every way out tried: each must be refused by the kernel. One test only,
//! since the seal cannot be undone.

use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

use hearth_seal::{seal, self_test, SealConfig};

fn refused(r: std::io::Result<()>, what: &str) {
    let e = r
        .err()
        .unwrap_or_else(|| panic!("{what} succeeded under the seal"));
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{what}: {e}");
}

#[test]
fn sealed_process_cannot_reach_out() {
    let dir = std::env::temp_dir().join(format!("hearth-seal-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let allowed = dir.join("model.gguf");
    std::fs::File::create(&allowed)
        .unwrap()
        .write_all(b"weights")
        .unwrap();
    // A real listener on loopback: connecting to it would succeed without the seal.
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    TcpStream::connect(("127.0.0.1", port)).expect("unsealed, the connect works");
    // A UDP socket made before the seal: only the send itself can be refused after it.
    let udp = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    udp.send_to(b"x", ("127.0.0.1", port))
        .expect("unsealed, the send works");

    let report = seal(&SealConfig {
        read: vec![allowed.clone()],
        write: vec![dir.clone()],
        bind_port: Some(port),
    })
    .unwrap();
    eprintln!("sealed: {}", report.mechanisms());

    let status = std::fs::read_to_string("/proc/self/status");
    // /proc is outside the allowed paths: with Landlock in force it cannot be read.
    if report.landlock == "unavailable" {
        let status = status.unwrap();
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    } else {
        refused(status.map(drop), "reading /proc/self/status");
    }
    refused(
        TcpStream::connect(("127.0.0.1", port)).map(drop),
        "TCP connect to loopback",
    );
    refused(
        udp.send_to(b"x", ("127.0.0.1", port)).map(drop),
        "a UDP send",
    );
    refused(
        UdpSocket::bind(("127.0.0.1", 0)).map(drop),
        "a new UDP socket",
    );
    assert!(
        ("hearth-seal-test.invalid", 80).to_socket_addrs().is_err(),
        "a DNS lookup succeeded under the seal"
    );
    // What was given still works.
    assert_eq!(std::fs::read(&allowed).unwrap(), b"weights");
    std::fs::write(dir.join("usage.log"), b"{}\n").unwrap();
    let test = self_test(&report, std::path::Path::new("/etc/hostname")).unwrap();
    eprintln!("self-test: {:?}", test.probes);
    assert_eq!(test.probes.len(), 3);
    drop(listener);
}
