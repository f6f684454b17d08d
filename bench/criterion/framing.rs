//! Message framing: splitting a buffer of upstream result messages into frames, the way the
//! relay does for every byte it forwards (`FrameReader::next` for client messages, `peek_len`
//! over runs of frames for results).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgvakt::protocol::{Frame, FrameReader};

/// A result of `rows` DataRows shaped like a contacts row (a few short text columns).
fn result_set(rows: usize) -> Vec<u8> {
    let mut row = Vec::new();
    let fields: [&[u8]; 6] = [
        b"4711",
        b"Kari",
        b"Nordmann",
        b"kari.nordmann@example.no",
        b"+47 912 34 567",
        b"XXXXXXXXXXX",
    ];
    row.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        row.extend_from_slice(&(f.len() as i32).to_be_bytes());
        row.extend_from_slice(f);
    }
    let data_row = Frame::build(b'D', &row);
    let mut out = Vec::with_capacity(rows * data_row.raw.len() + 32);
    for _ in 0..rows {
        out.extend_from_slice(&data_row.raw);
    }
    out.extend_from_slice(&Frame::build(b'C', b"SELECT 1000\0").raw);
    out.extend_from_slice(&Frame::build(b'Z', b"I").raw);
    out
}

fn framing(c: &mut Criterion) {
    let reader = FrameReader::new(1 << 30);
    let input = result_set(1000);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(input.len() as u64));

    group.bench_function("next/1000_data_rows", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&input[..]),
            |buf| {
                let mut n = 0;
                while let Some(frame) = reader.next(buf).expect("valid frames") {
                    n += frame.raw.len();
                }
                black_box(n)
            },
            criterion::BatchSize::SmallInput,
        )
    });

    group.bench_function("peek_len_run/1000_data_rows", |b| {
        b.iter(|| {
            let buf = black_box(&input[..]);
            let mut pos = 0;
            while let Some(len) = reader.peek_len(&buf[pos..]).expect("valid frames") {
                if buf.len() - pos < len {
                    break;
                }
                pos += len;
            }
            black_box(pos)
        })
    });

    let query = Frame::build(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0",
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("next/one_query", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&query.raw[..]),
            |buf| reader.next(buf).expect("valid frame"),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
