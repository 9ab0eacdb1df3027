//! The kernel floor: what one loopback TCP write of a fan-out delivery costs when nothing
//! but the write happens. N socket pairs on 127.0.0.1 (`TCP_NODELAY` on both ends), a
//! reader thread draining the far ends, and one writer thread writing a pre-built frame of
//! a delivery's size to the near ends round-robin, one `write` per frame. The writer
//! thread's own CPU (user and system, from `/proc/thread-self/stat`) divided by the writes
//! is the floor a server that makes one socket write per delivery cannot go below; on
//! loopback that system time includes the receiving socket's TCP processing and the
//! reader's wake-up, as it does for a server's writes in the fan-out scenario.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::procs::thread_cpu_split;

/// A WebSocket text frame of exactly `bytes` bytes (header included), as a server sends
/// it: unmasked, FIN set, a SignalR-looking JSON payload padded to the size.
fn frame(bytes: usize) -> Vec<u8> {
    let header = if bytes - 2 <= 125 { 2 } else { 4 };
    let len = bytes.saturating_sub(header);
    let mut payload =
        b"{\"type\":1,\"target\":\"B\",\"arguments\":[{\"s\":1,\"t\":1,\"p\":1,\"x\":\"".to_vec();
    payload.resize(len.saturating_sub(4), b'x');
    payload.extend_from_slice(b"\"}]}");
    payload.truncate(len);
    let mut f = vec![0x81u8];
    if header == 2 {
        f.push(len as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(&payload);
    f
}

/// Runs the floor measurement: `pairs` connections, frames of `frame_bytes`, for `secs`
/// seconds or `max_writes` writes, whichever comes first.
pub fn run(pairs: usize, frame_bytes: usize, secs: f64, max_writes: Option<u64>) -> Value {
    let frame_bytes = frame_bytes.clamp(8, 65_000);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = listener.local_addr().unwrap();
    let mut near = Vec::with_capacity(pairs);
    let mut far = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let client = TcpStream::connect(addr).expect("loopback connect");
        let (server, _) = listener.accept().expect("loopback accept");
        client.set_nodelay(true).unwrap();
        server.set_nodelay(true).unwrap();
        client.set_nonblocking(true).unwrap();
        far.push(client);
        near.push(server);
    }
    drop(listener);

    // The reader: one thread, one task per socket, each draining into a 4 KiB buffer.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("reader runtime");
        rt.block_on(async move {
            let tasks: Vec<_> = far
                .into_iter()
                .map(|s| {
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let mut s = tokio::net::TcpStream::from_std(s).expect("tokio stream");
                        let mut buf = vec![0u8; 4096];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counter.fetch_add(n as u64, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
    });

    // The writer: this thread's CPU is what is reported.
    let frame = frame(frame_bytes);
    let frame_len = frame.len() as u64;
    let limit = max_writes.unwrap_or(u64::MAX);
    let deadline = Duration::from_secs_f64(secs);
    let writer = std::thread::spawn(move || {
        let mut near = near;
        let (u0, s0) = thread_cpu_split();
        let start = Instant::now();
        let mut writes = 0u64;
        let n = near.len();
        'outer: loop {
            for _ in 0..1024 {
                if writes >= limit {
                    break 'outer;
                }
                near[(writes as usize) % n]
                    .write_all(&frame)
                    .expect("loopback write");
                writes += 1;
            }
            if start.elapsed() >= deadline {
                break;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (u1, s1) = thread_cpu_split();
        drop(near);
        (writes, elapsed, u1 - u0, s1 - s0)
    });
    let (writes, elapsed, user, system) = writer.join().expect("writer thread");
    reader.join().expect("reader thread");
    let expected = writes * frame_len;
    let got = received.load(Ordering::Relaxed);
    let per = |s: f64| s * 1e6 / writes.max(1) as f64;
    json!({
        "scenario": "floor",
        "pairs": pairs,
        "frame_bytes": frame_len,
        "writes": writes,
        "secs": elapsed,
        "writes_per_sec": writes as f64 / elapsed.max(1e-9),
        "cpu_us_per_write": per(user + system),
        "user_us_per_write": per(user),
        "system_us_per_write": per(system),
        "measured": "the writing thread only (/proc/thread-self/stat); the reader thread is not counted",
        "bytes_received": got,
        "bytes_lost": expected.saturating_sub(got),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_requested_size_and_a_valid_header() {
        for bytes in [8, 100, 127, 128, 170, 300, 4000] {
            let f = frame(bytes);
            assert_eq!(f.len(), bytes, "{bytes}");
            assert_eq!(f[0], 0x81);
            let len = if f[1] == 126 {
                u16::from_be_bytes([f[2], f[3]]) as usize + 4
            } else {
                f[1] as usize + 2
            };
            assert_eq!(len, bytes);
        }
    }

    #[test]
    fn a_short_run_delivers_every_byte() {
        let v = run(4, 170, 5.0, Some(2000));
        assert_eq!(v["writes"], 2000);
        assert_eq!(v["bytes_lost"], 0);
        assert_eq!(v["bytes_received"], 2000 * 170);
    }
}
