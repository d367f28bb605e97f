//! Copying value buffers into fresh blobs: the one copy of a save.
//!
//! Work is cut into pieces that threads pull in order. Contiguous sources
//! become 8 MiB pieces. Strided sources (a DataFrame's columns that are views
//! into one 2-D array) become row blocks of ~256 KiB of the source, ordered
//! by source address, so the columns of one block are gathered while those
//! rows are in cache instead of re-reading the whole array once per column;
//! the gather loop is specialised per item size instead of calling memcpy
//! for every 8-byte item.
//!
//! A destination inside a store mapping has each piece faulted in first
//! (`Region::prefault`), on the copying thread, so the two halves of the
//! work (page faults and bytes) both run in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::source::RawSource;
use crate::shm::Region;

const CHUNK: usize = 8 << 20;
const STRIDED_BLOCK: usize = 256 << 10;
/// Below this a piece is copied without prefaulting (a syscall per page or
/// two would cost more than it saves).
const PREFAULT_MIN: usize = 64 << 10;

/// Where a copy writes: `ptr`, inside `region` when it is store memory.
#[derive(Clone, Copy)]
pub(crate) struct Dest<'a> {
    pub ptr: *mut u8,
    pub region: Option<&'a Region>,
}

#[derive(Clone, Copy)]
struct Piece<'a>(RawSource, Dest<'a>);
// SAFETY: pieces write disjoint destination ranges and only read sources
// that the caller keeps valid for the whole copy; `Region` is Sync.
unsafe impl Send for Piece<'_> {}
// SAFETY: as above.
unsafe impl Sync for Piece<'_> {}

/// Copies every (source, destination) pair, in parallel when it pays.
///
/// # Safety
/// Each source must be readable for its described range and each destination
/// writable for `source.len()` bytes, not aliased by any other destination.
pub(crate) unsafe fn copy_all(jobs: &[(RawSource, Dest<'_>)]) {
    let mut pieces = Vec::new();
    let mut total = 0usize;
    for &(src, dst) in jobs {
        total += src.len();
        // SAFETY: forwarded caller contract.
        unsafe { split(src, dst, &mut pieces) };
    }
    pieces.sort_by_key(|Piece(src, _)| start_address(src));
    let run = |p: &Piece| {
        let Piece(src, dst) = *p;
        // SAFETY: pieces lie inside the caller's ranges; destinations are disjoint.
        unsafe { copy_piece(src, dst) }
    };
    let threads = copy_threads();
    if threads <= 1 || total < 4 * CHUNK || pieces.len() < 2 {
        pieces.iter().for_each(run);
        return;
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match pieces.get(i) {
                    Some(p) => run(p),
                    None => break,
                }
            });
        }
    });
}

/// Threads for large copies: the CPUs we may use, at most 8. Looked up once:
/// `available_parallelism` reads cgroup files on every call.
fn copy_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
    })
}

fn start_address(src: &RawSource) -> usize {
    match *src {
        RawSource::Contiguous { ptr, .. } => ptr as usize,
        RawSource::Strided {
            ptr, stride, count, ..
        } if stride < 0 && count > 0 => {
            (ptr as usize).wrapping_sub((count - 1) * stride.unsigned_abs())
        }
        RawSource::Strided { ptr, .. } => ptr as usize,
    }
}

/// # Safety
/// As [`copy_all`].
unsafe fn split<'a>(src: RawSource, dst: Dest<'a>, pieces: &mut Vec<Piece<'a>>) {
    match src {
        RawSource::Contiguous { ptr, len } => {
            let mut off = 0;
            while off < len {
                let n = CHUNK.min(len - off);
                // SAFETY: off + n <= len, inside the source.
                let from = unsafe { ptr.add(off) };
                // SAFETY: off + n <= len, inside the destination.
                let to = unsafe { dst.ptr.add(off) };
                let to = Dest { ptr: to, ..dst };
                pieces.push(Piece(RawSource::Contiguous { ptr: from, len: n }, to));
                off += n;
            }
        }
        RawSource::Strided {
            ptr,
            itemsize,
            count,
            stride,
        } => {
            let per = (STRIDED_BLOCK / stride.unsigned_abs().max(itemsize).max(1)).max(1);
            let mut i = 0;
            while i < count {
                let n = per.min(count - i);
                // SAFETY: item i lies at ptr + i*stride inside the source array.
                let from = unsafe { ptr.offset(i as isize * stride) };
                // SAFETY: (i + n) * itemsize <= count * itemsize, inside the destination.
                let to = unsafe { dst.ptr.add(i * itemsize) };
                let to = Dest { ptr: to, ..dst };
                pieces.push(Piece(
                    RawSource::Strided {
                        ptr: from,
                        itemsize,
                        count: n,
                        stride,
                    },
                    to,
                ));
                i += n;
            }
        }
    }
}

/// # Safety
/// `src` must be readable and `dst` writable for `src.len()` bytes.
unsafe fn copy_piece(src: RawSource, dst: Dest<'_>) {
    if let Some(region) = dst.region.filter(|_| src.len() >= PREFAULT_MIN) {
        region.prefault(
            (dst.ptr as usize).wrapping_sub(region.base() as usize),
            src.len(),
        );
    }
    let dst = dst.ptr;
    match src {
        RawSource::Contiguous { ptr, len } => {
            // SAFETY: caller contract; shared memory never overlaps the source.
            unsafe { std::ptr::copy_nonoverlapping(ptr, dst, len) }
        }
        RawSource::Strided {
            ptr,
            itemsize,
            count,
            stride,
        } => {
            // SAFETY: caller contract, for every arm.
            unsafe {
                match itemsize {
                    1 => gather::<u8>(ptr, dst, count, stride),
                    2 => gather::<u16>(ptr, dst, count, stride),
                    4 => gather::<u32>(ptr, dst, count, stride),
                    8 => gather::<u64>(ptr, dst, count, stride),
                    16 => gather::<u128>(ptr, dst, count, stride),
                    _ => {
                        for i in 0..count {
                            std::ptr::copy_nonoverlapping(
                                ptr.offset(i as isize * stride),
                                dst.add(i * itemsize),
                                itemsize,
                            )
                        }
                    }
                }
            }
        }
    }
}

/// Gathers `count` items of type `T` spaced `stride` bytes apart.
///
/// # Safety
/// Item i at `src + i*stride` must be readable, `dst` writable for
/// `count * size_of::<T>()` bytes; neither needs alignment.
unsafe fn gather<T: Copy>(src: *const u8, dst: *mut u8, count: usize, stride: isize) {
    let dst = dst as *mut T;
    for i in 0..count {
        // SAFETY: caller contract; unaligned accesses are explicit.
        unsafe {
            let v = std::ptr::read_unaligned(src.offset(i as isize * stride) as *const T);
            std::ptr::write_unaligned(dst.add(i), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_and_contiguous_copies_are_exact() {
        // A 3-column C-ordered matrix of u64; gather each column (and one reversed).
        let rows = 100_000usize;
        let m: Vec<u64> = (0..rows as u64 * 3).collect();
        let mut out = vec![vec![0u64; rows]; 4];
        let base = m.as_ptr() as *const u8;
        let mut jobs = Vec::new();
        for (c, o) in out.iter_mut().take(3).enumerate() {
            // SAFETY: column c starts c items into the matrix.
            let ptr = unsafe { base.add(c * 8) };
            jobs.push((
                RawSource::Strided {
                    ptr,
                    itemsize: 8,
                    count: rows,
                    stride: 24,
                },
                Dest {
                    ptr: o.as_mut_ptr() as *mut u8,
                    region: None,
                },
            ));
        }
        // SAFETY: the last item of column 0.
        let last = unsafe { base.add((rows - 1) * 24) };
        jobs.push((
            RawSource::Strided {
                ptr: last,
                itemsize: 8,
                count: rows,
                stride: -24,
            },
            Dest {
                ptr: out[3].as_mut_ptr() as *mut u8,
                region: None,
            },
        ));
        // SAFETY: every range lies inside `m` and `out`.
        unsafe { copy_all(&jobs) };
        for (c, col) in out.iter().take(3).enumerate() {
            assert!(col
                .iter()
                .enumerate()
                .all(|(r, v)| *v == (r * 3 + c) as u64));
        }
        assert!(out[3]
            .iter()
            .enumerate()
            .all(|(r, v)| *v == ((rows - 1 - r) * 3) as u64));

        let big: Vec<u8> = (0..(40usize << 20)).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; big.len()];
        let to = Dest {
            ptr: dst.as_mut_ptr(),
            region: None,
        };
        let raw = crate::store::Source::from_slice(&big).raw().expect("raw");
        // SAFETY: both buffers have big.len() bytes.
        unsafe { copy_all(&[(raw, to)]) };
        assert!(dst == big);
    }
}
