//! Checks that make untrusted buffers safe to view.

/// True when the little-endian Arrow offsets in `bytes` (`itemsize` 4 or 8)
/// never decrease and all lie in `0..=data_size`.
pub fn offsets_ok(bytes: &[u8], itemsize: usize, data_size: u64) -> bool {
    let limit = i64::try_from(data_size).unwrap_or(i64::MAX);
    match itemsize {
        4 => match typed::<i32>(bytes) {
            Some(v) => monotonic_within(v, i32::try_from(limit).unwrap_or(i32::MAX)),
            None => scan_bytes::<4>(bytes, limit),
        },
        8 => match typed::<i64>(bytes) {
            Some(v) => monotonic_within(v, limit),
            None => scan_bytes::<8>(bytes, limit),
        },
        _ => false,
    }
}

/// The bytes as a slice of `T` when they are aligned for it (blobs are
/// 64-byte aligned) and the machine is little-endian, as Arrow's data is.
fn typed<T: bytemuck_free::Plain>(bytes: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "big") || bytes.len() % std::mem::size_of::<T>() != 0 {
        return None;
    }
    // SAFETY: T is a plain integer type: every bit pattern is a valid value,
    // and `align_to` only yields the middle part at T's alignment.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// Branch-free so the compiler vectorises it: one pass, no early exit. Large
/// inputs are split across two threads: the pass is bound by the page
/// faults of first touching shared memory, which threads take in parallel.
fn monotonic_within<T: Copy + PartialOrd + Default + Sync>(v: &[T], limit: T) -> bool {
    let (Some(&first), Some(&last)) = (v.first(), v.last()) else {
        return true;
    };
    let ordered = |v: &[T]| v.iter().zip(&v[1..]).fold(true, |ok, (a, b)| ok & (a <= b));
    let sorted = if v.len() >= 1 << 20 {
        let mid = v.len() / 2;
        // The halves share element `mid`, so the pair across the cut is checked.
        std::thread::scope(|s| {
            let left = s.spawn(|| ordered(&v[..=mid]));
            let right = ordered(&v[mid..]);
            left.join().unwrap_or(false) && right
        })
    } else {
        ordered(v)
    };
    sorted && first >= T::default() && last <= limit
}

fn scan_bytes<const N: usize>(bytes: &[u8], limit: i64) -> bool {
    let values: Vec<i64> = bytes
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..N].copy_from_slice(c);
            if N == 4 {
                i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            } else {
                i64::from_le_bytes(b)
            }
        })
        .collect();
    monotonic_within(&values, limit)
}

/// True when every item of an Arrow string array is valid UTF-8: the text
/// between the first and the last offset is, and every offset falls on a
/// character boundary (then each item is a whole run of characters). The
/// offsets (`itemsize` 4 or 8, little-endian) must already satisfy
/// [`offsets_ok`] for `data`; returns false otherwise.
pub fn utf8_items_ok(data: &[u8], offsets: &[u8], itemsize: usize) -> bool {
    let read = |i: usize| -> Option<usize> {
        let b = offsets.get(i * itemsize..(i + 1) * itemsize)?;
        let v = match itemsize {
            4 => i64::from(i32::from_le_bytes(b.try_into().ok()?)),
            8 => i64::from_le_bytes(b.try_into().ok()?),
            _ => return None,
        };
        usize::try_from(v).ok()
    };
    let n = offsets.len() / itemsize.max(1);
    if n == 0 {
        return true;
    }
    let (Some(first), Some(last)) = (read(0), read(n - 1)) else {
        return false;
    };
    let Some(text) = data.get(first..last) else {
        return false;
    };
    if std::str::from_utf8(text).is_err() {
        return false;
    }
    // a continuation byte (0b10xx_xxxx) is never where a character starts
    (1..n - 1).all(|i| read(i).is_some_and(|o| o >= last || data[o] & 0xC0 != 0x80))
}

mod bytemuck_free {
    /// Integer types valid for every bit pattern.
    pub trait Plain: Copy {}
    impl Plain for i32 {}
    impl Plain for i64 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le64(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn utf8_is_checked_per_item() {
        let data = "aé€z".as_bytes(); // a, é (2 bytes), € (3 bytes), z
        assert!(utf8_items_ok(data, &le64(&[0, 1, 3, 6, 7]), 8));
        assert!(utf8_items_ok(data, &le64(&[1, 3]), 8));
        // splits é: the concatenation is valid, its items are not
        assert!(!utf8_items_ok(data, &le64(&[0, 2, 7]), 8));
        assert!(!utf8_items_ok(b"a\xffb", &le64(&[0, 3]), 8));
        assert!(
            utf8_items_ok(b"a\xffb", &le64(&[0, 1]), 8),
            "only the items' bytes count"
        );
        assert!(utf8_items_ok(b"", &[], 8));
        let small: Vec<u8> = [0i32, 1, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(utf8_items_ok(data, &small, 4));
    }

    #[test]
    fn offsets_are_checked() {
        assert!(offsets_ok(&le64(&[0, 3, 3, 10]), 8, 10));
        assert!(!offsets_ok(&le64(&[0, 3, 2, 10]), 8, 10));
        assert!(!offsets_ok(&le64(&[0, 3, 11]), 8, 10));
        assert!(!offsets_ok(&le64(&[-1, 3]), 8, 10));
        assert!(offsets_ok(&[], 8, 0));
        let small: Vec<u8> = [0i32, 1, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(offsets_ok(&small, 4, 5));
        assert!(!offsets_ok(&small, 4, 4));
        assert!(!offsets_ok(&small, 3, 5));
        // Unaligned input takes the byte-wise path and agrees.
        let mut shifted = vec![0u8];
        shifted.extend(le64(&[0, 3, 2]));
        assert!(!offsets_ok(&shifted[1..], 8, 10));
        let mut shifted = vec![0u8];
        shifted.extend(le64(&[0, 3, 9]));
        assert!(offsets_ok(&shifted[1..], 8, 10));
    }
}
