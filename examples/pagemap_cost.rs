//! Cost of `pagemap::unchanged` (the check a save makes before it
//! references a loaded blob instead of copying it), per MiB, over a private
//! mapping of a 1 GiB memory file: untouched, fully read, and with one page
//! written at the end (the whole range is still read).
//!
//! `cargo run --release --example pagemap_cost`

use std::os::fd::AsRawFd;
use std::time::Instant;

use memmap2::MmapOptions;
use nix::sys::memfd::{memfd_create, MFdFlags};
use vineyard_kedro::pagemap::unchanged;

const LEN: usize = 1 << 30;

fn per_mib(label: &str, start: usize, want: bool) {
    let rounds = 5;
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(unchanged(start, LEN), want, "{label}");
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mib = (LEN >> 20) as f64;
    println!(
        "{label:<28} {:>8.2} ms per GiB  {:>6.2} us per MiB",
        best * 1e3,
        best * 1e6 / mib
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fd = memfd_create(c"pagemap-cost", MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, LEN as i64)?;
    let shared = MmapOptions::new().len(LEN).map_raw(fd.as_raw_fd())?;
    // SAFETY: our own fresh mapping, written once here.
    unsafe { std::ptr::write_bytes(shared.as_mut_ptr(), 1, LEN) };
    // SAFETY: a private mapping of a file only this program uses.
    let mut private = unsafe { MmapOptions::new().len(LEN).map_copy(&fd)? };
    let start = private.as_ptr() as usize;
    per_mib("untouched", start, true);
    let sum: u64 = private.iter().step_by(4096).map(|b| u64::from(*b)).sum();
    assert_eq!(sum, (LEN / 4096) as u64);
    per_mib("every page read", start, true);
    private[LEN - 1] = 2;
    per_mib("last page written", start, false);
    Ok(())
}
