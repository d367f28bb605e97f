//! Restoring the types a value had before it was stored: the official
//! layouts widen strings, binaries and lists to 64-bit offsets, and a read
//! narrows them back (only offsets are rewritten; data is shared).

use std::sync::Arc;

use arrow_array::{make_array, Array, ArrayRef, LargeListArray, ListArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_schema::DataType;

/// `arr` as type `to`, where `to` is the type it had before it was widened
/// for storing (`types::widen`): 64-bit offsets back to 32-bit ones, list
/// item fields as they were named. Data buffers are shared; only offsets
/// are rewritten.
pub fn narrow(arr: ArrayRef, to: &DataType) -> std::result::Result<ArrayRef, String> {
    if arr.data_type() == to {
        return Ok(arr);
    }
    let fail = || format!("cannot restore {} as {to}", arr.data_type());
    match (arr.data_type(), to) {
        (DataType::LargeUtf8, DataType::Utf8) | (DataType::LargeBinary, DataType::Binary) => {
            let data = arr.to_data();
            let offsets = narrow_offsets(&data)?;
            let builder = ArrayData::builder(to.clone())
                .len(data.len())
                .nulls(data.nulls().cloned())
                .add_buffer(offsets.into_inner().into_inner())
                .add_buffer(data.buffers()[1].clone());
            // SAFETY: the same items as `arr`, which was validated (offsets
            // in bounds and monotonic, UTF-8 on character boundaries); the
            // offsets are the same values, checked to fit in i32.
            Ok(make_array(unsafe { builder.build_unchecked() }))
        }
        (DataType::LargeList(_), DataType::List(f) | DataType::LargeList(f)) => {
            let list = arr
                .as_any()
                .downcast_ref::<LargeListArray>()
                .ok_or_else(fail)?;
            let values = narrow(list.values().clone(), f.data_type())?;
            let nulls = list.nulls().cloned();
            let out: ArrayRef = if matches!(to, DataType::List(_)) {
                let offsets = narrow_offsets(&list.to_data())?;
                Arc::new(
                    ListArray::try_new(f.clone(), offsets, values, nulls)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                Arc::new(
                    LargeListArray::try_new(f.clone(), list.offsets().clone(), values, nulls)
                        .map_err(|e| e.to_string())?,
                )
            };
            Ok(out)
        }
        _ => Err(fail()),
    }
}

/// The 64-bit offsets of a (large) binary or list array, sliced to it, as
/// 32-bit ones. The array was validated, so its offsets are monotonic and
/// non-negative: they fit in i32 if the last one does, and then the
/// conversion is a plain (vectorised) narrowing.
fn narrow_offsets(data: &ArrayData) -> std::result::Result<OffsetBuffer<i32>, String> {
    let all: &[i64] = data.buffers()[0].typed_data::<i64>();
    let mine = all
        .get(data.offset()..data.offset() + data.len() + 1)
        .ok_or("offsets shorter than the array")?;
    let (first, last) = (
        mine.first().copied().unwrap_or(0),
        mine.last().copied().unwrap_or(0),
    );
    if first < 0 || i32::try_from(last).is_err() {
        return Err(format!("offsets up to {last} do not fit 32-bit offsets"));
    }
    let narrow: Vec<i32> = mine.iter().map(|&o| o as i32).collect();
    // SAFETY: the same values as the validated (monotonic, non-negative)
    // i64 offsets, each within 0..=last <= i32::MAX.
    Ok(unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(narrow)) })
}
